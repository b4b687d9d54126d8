"""The member ledger: what the shop knows of each member, and which contact is which.

A member state is keyed by (audience, subscriber hash), and every write here is an
upsert on that key: a member seen twice in one run, a move onto an address the ledger
already knows, or a webhook about a member a sync is recording can never raise a
unique-constraint error. Contact links say which member each contact was last sent
as; they are how consent follows a person whose address changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite

from .models import DEFAULT_STORE


def member_states(
    session: Any, State: Any, audience_id: str, emails_by_hash: Mapping[str, str]
) -> dict[str, Any]:
    """The state of each member (ORM objects, to change), created where missing."""
    if not emails_by_hash:
        return {}
    session.flush()  # states added in this transaction must be seen, not added again
    _insert_missing(session, State, audience_id, emails_by_hash)
    found = session.execute(
        sa.select(State).where(
            State.store == DEFAULT_STORE,
            State.audience_id == audience_id,
            State.subscriber_hash.in_(list(emails_by_hash)),
        )
    ).scalars()
    return {state.subscriber_hash: state for state in found}


def member_state(session: Any, State: Any, audience_id: str, member_hash: str, email: str) -> Any:
    """The state of one member, created where missing."""
    return member_states(session, State, audience_id, {member_hash: email})[member_hash]


def _insert_missing(
    session: Any, State: Any, audience_id: str, emails_by_hash: Mapping[str, str]
) -> None:
    rows = [
        {"store": DEFAULT_STORE, "audience_id": audience_id, "subscriber_hash": member_hash,
         "email": email, "sent": False, "archived_by_shop": False, "tags": ""}
        for member_hash, email in emails_by_hash.items()
    ]  # fmt: skip
    dialect = session.get_bind(mapper=sa.inspect(State)).dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(insert(State).on_conflict_do_nothing(), rows)
        return
    # Other databases: one savepoint a row, so a row another writer added is skipped.
    existing = set(
        session.execute(
            sa.select(State.subscriber_hash).where(
                State.store == DEFAULT_STORE,
                State.audience_id == audience_id,
                State.subscriber_hash.in_(list(emails_by_hash)),
            )
        ).scalars()
    )
    for row in rows:
        if row["subscriber_hash"] in existing:
            continue
        try:
            with session.begin_nested():
                session.execute(sa.insert(State), [row])
        except exc.IntegrityError:
            pass


def rekey(session: Any, State: Any, state: Any, member_hash: str, email: str) -> None:
    """Move *state* to another address: the member itself moved in Mailchimp.

    Whatever the ledger held for the new address is stale (Mailchimp moves a member
    only onto an address it has no member for), so that row gives way.
    """
    if state.subscriber_hash != member_hash:
        session.execute(
            sa.delete(State).where(
                State.store == state.store,
                State.audience_id == state.audience_id,
                State.subscriber_hash == member_hash,
                State.id != state.id,
            )
        )
        state.subscriber_hash = member_hash
    state.email = email


def linked_contacts(
    session: Any, Link: Any, audience_id: str, hashes: Iterable[str]
) -> set[tuple[str, str]]:
    """The contacts (source name, key) last sent as these members."""
    rows = session.execute(
        sa.select(Link.source, Link.contact_key).where(
            Link.store == DEFAULT_STORE,
            Link.audience_id == audience_id,
            Link.subscriber_hash.in_(list(set(hashes))),
        )
    )
    return {(source, key) for source, key in rows}
