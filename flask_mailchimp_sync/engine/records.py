"""Member states as plain records: a page's read in one statement, written in a few.

Recording a page of hundreds of members through ORM objects (one object, one flush
entry each) costs more than the rest of the page; records are plain attribute bags
that the recorder changes the same way, made from the rows the page was planned from
(a page's members are its own: no other page writes them). A record remembers what
it was read as, so only the columns a page changed are written: a change a webhook
committed meanwhile to another column stands. A member the ledger did not know is
inserted with its values at once; a row someone else added meanwhile takes just the
columns set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from .. import many
from ..models import DEFAULT_STORE
from . import ledger

#: What recording a member may change in its state.
RECORDED = ("email", "status", "status_changed_at", "sent", "archived_by_shop",
            "fingerprint", "tags", "synced_at", "last_error")  # fmt: skip


class Record(SimpleNamespace):
    """A member's state row, to change; ``id`` is ``None`` until it is written."""

    def changes(self) -> dict[str, Any]:
        """What was changed since the row was read (or made, for a new member)."""
        original = self.__dict__["_read"]
        return {name: getattr(self, name) for name in RECORDED
                if original[name] != getattr(self, name)}  # fmt: skip


def read(
    session: Any, State: Any, audience_id: str, emails_by_hash: Mapping[str, str]
) -> dict[str, Record]:
    """The state of each member as a record; a new record where there is none."""
    if not emails_by_hash:
        return {}
    session.flush()  # states added in this transaction must be seen, not added again
    if ledger.upsert_insert(session, State) is None:
        ledger.member_states(session, State, audience_id, emails_by_hash)  # rows first
    query = sa.select(*State.__table__.c).where(
        ledger.of_members(session, State, audience_id, emails_by_hash)
    )
    rows = {row.subscriber_hash: row for row in session.execute(query)}
    return known(audience_id, rows, emails_by_hash)


def known(
    audience_id: str, rows: Mapping[str, Any], emails_by_hash: Mapping[str, str]
) -> dict[str, Record]:
    """Records of these members from their state rows as read (``None``: no row)."""
    found = {}
    for member_hash, email in emails_by_hash.items():
        row = rows.get(member_hash)
        if row is not None:
            found[member_hash] = _record(dict(row._mapping))
            continue
        found[member_hash] = _record(
            {"id": None, "store": DEFAULT_STORE, "audience_id": audience_id,
             "subscriber_hash": member_hash, "email": email, "status": None, "sent": False,
             "archived_by_shop": False, "fingerprint": None, "tags": "",
             "status_changed_at": None, "synced_at": None, "last_error": None}
        )  # fmt: skip
    return found


def write(session: Any, State: Any, records: Iterable[Record]) -> None:
    """Write what changed: new records inserted, others updated, a column set a time."""
    table = State.__table__
    records = list(records)
    new = [r for r in records if r.id is None]
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        changes = record.changes() if record.id is not None else None
        if changes:
            by_columns.setdefault(tuple(changes), []).append({"record_id": record.id, **changes})
    for columns, rows in by_columns.items():
        where = table.c.id == sa.bindparam("record_id")
        values: dict[str, Any] = {name: sa.bindparam(name) for name in columns}
        session.execute(sa.update(table).where(where).values(values), rows)
    if new:
        _insert(session, State, new)


def _insert(session: Any, State: Any, records: list[Record]) -> None:
    """Insert new members; one someone added meanwhile (a webhook, say) takes just the
    columns this page set, like an update would."""
    table = State.__table__
    key = [table.c.store, table.c.audience_id, table.c.subscriber_hash]
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        row = {n: v for n, v in vars(record).items() if n in table.c and n != "id"}
        by_columns.setdefault(tuple(record.changes()), []).append(row)
    for columns, rows in by_columns.items():
        if many.insert_new(session, table, rows, update=columns, key=key):
            continue
        insert = ledger.upsert_insert(session, State)
        changed = {name: insert.excluded[name] for name in columns}
        if changed:
            session.execute(insert.on_conflict_do_update(index_elements=key, set_=changed), rows)
        else:
            session.execute(insert.on_conflict_do_nothing(), rows)


def _record(values: dict[str, Any]) -> Record:
    record = Record(**values)
    record._read = dict(values)
    return record
