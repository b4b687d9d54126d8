"""The member ledger: what the shop knows of each member, and which contact is which.

A member state is keyed by (audience, subscriber hash), and every write here is an
upsert on that key: a member seen twice in one run, a move onto an address the ledger
already knows, or a webhook about a member a sync is recording can never raise a
unique-constraint error. Contact links say which member each contact was last sent
as; they are how consent follows a person whose address changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite

from .. import many
from ..models import DEFAULT_STORE, utcnow
from .planner import ACTIVE, Known, blocks


def member_states(
    session: Any, State: Any, audience_id: str, emails_by_hash: Mapping[str, str]
) -> dict[str, Any]:
    """The state of each member (ORM objects, to change), created where missing."""
    if not emails_by_hash:
        return {}
    session.flush()  # states added in this transaction must be seen, not added again
    _insert_missing(session, State, audience_id, emails_by_hash)
    found = session.execute(
        sa.select(State).where(of_members(session, State, audience_id, emails_by_hash))
    ).scalars()
    return {state.subscriber_hash: state for state in found}


def of_members(session: Any, State: Any, audience_id: str, hashes: Iterable[str]) -> Any:
    """SQL: the state rows of these members (by subscriber hash) of the audience."""
    return sa.and_(
        State.store == DEFAULT_STORE,
        State.audience_id == audience_id,
        many.one_of(session, State.subscriber_hash, hashes),
    )


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
    insert_new(session, State, rows)


def insert_new(session: Any, Model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert *rows*, skipping any that a unique constraint says exists already."""
    if not rows or many.insert_new(session, Model.__table__, rows):
        return
    insert = upsert_insert(session, Model)
    if insert is not None:
        session.execute(insert.on_conflict_do_nothing(), rows)
        return
    # Other databases: one savepoint a row, so a row another writer added is skipped.
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(sa.insert(Model), [row])
        except exc.IntegrityError:
            pass


def upsert_insert(session: Any, State: Any) -> Any:
    """An INSERT into *State*'s table that can skip rows already there (``None`` on
    databases without ``ON CONFLICT``)."""
    dialect = session.get_bind(mapper=sa.inspect(State)).dialect.name
    if dialect == "postgresql":
        return postgresql.insert(State.__table__)
    if dialect == "sqlite":
        return sqlite.insert(State.__table__)
    return None


def forget_fingerprints(session: Any, Link: Any, audience_id: str) -> None:
    """Count every contact of the audience as changed at the next Sync: the audience
    gained fields, so contacts whose own data did not change have values to send."""
    session.execute(
        sa.update(Link)
        .where(Link.store == DEFAULT_STORE, Link.audience_id == audience_id)
        .values(fingerprint=None)
    )


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


def link_unlinked(
    session: Any, Link: Any, audience_id: str, member_hash: str, contacts: Iterable[tuple[str, str]]
) -> None:
    """Link contacts that have no link yet to a member (found by its address): from then
    on they are that person, whatever their address becomes."""
    rows = [
        {"store": DEFAULT_STORE, "source": source, "contact_key": key,
         "audience_id": audience_id, "subscriber_hash": member_hash, "fingerprint": None}
        for source, key in sorted(set(contacts))
    ]  # fmt: skip
    insert_new(session, Link, rows)


def linked_contacts(
    session: Any, Link: Any, audience_id: str, hashes: Iterable[str]
) -> set[tuple[str, str]]:
    """The contacts (source name, key) last sent as these members."""
    rows = session.execute(
        sa.select(Link.source, Link.contact_key).where(
            Link.store == DEFAULT_STORE,
            Link.audience_id == audience_id,
            many.one_of(session, Link.subscriber_hash, set(hashes)),
        )
    )
    return {(source, key) for source, key in rows}


def known(state: Any) -> Known | None:
    """What a state row tells the planner."""
    if state is None:
        return None
    return Known(
        status=state.status,
        sent=bool(state.sent),
        archived_by_shop=bool(state.archived_by_shop),
        fingerprint=state.fingerprint,
        tags=frozenset(t for t in (state.tags or "").split(",") if t),
        error=state.last_error,
    )


def set_status(state: Any, status: str, email: str, *, when: datetime | None = None) -> None:
    """Note Mailchimp's status of a member (and when it changed).

    A member coming back (from unsubscribed, cleaned, transactional or archived to
    subscribed or pending) joined again on their own, or by the hand of someone in
    Mailchimp: from then on the member is not the shop's to archive. A member leaving
    "archived" in any way is no longer the shop's archive: archived again later, it is
    someone else's, and bringing it back could resubscribe someone who unsubscribed
    meanwhile. (The shop's own archive and restore mark the member again, after this.)"""
    if state.status != status:
        if state.status is not None and state.status not in ACTIVE and status in ACTIVE:
            state.sent = False
        if state.status == "archived":
            state.archived_by_shop = False
        state.status = status
        state.status_changed_at = when or utcnow()
    state.email = email


def states_read(
    session: Any, State: Any, audience_id: str, hashes: Iterable[str]
) -> dict[str, Any]:
    """What is known of these members, as plain rows (cheap: nothing to change)."""
    query = sa.select(*State.__table__.c).where(of_members(session, State, audience_id, hashes))
    return {row.subscriber_hash: row for row in session.execute(query)}


def moved_contacts(
    links: Mapping[tuple[str, str], Any], audience_id: str, groups: Mapping[str, list[Any]]
) -> dict[str, set[str]]:
    """For each address, the other members of the audience its contacts were last sent as."""
    moved: dict[str, set[str]] = {}
    for member_hash, rows in groups.items():
        for row in rows:
            link = links.get((row.source, row.contact_key))
            if (
                link is not None
                and link.audience_id == audience_id
                and link.subscriber_hash != member_hash
            ):
                moved.setdefault(member_hash, set()).add(link.subscriber_hash)
    return moved


def previous_members(
    moved: Mapping[str, set[str]], states: Mapping[str, Any], still_used: set[str]
) -> dict[str, tuple[Any, bool]]:
    """For each address a contact moved to: the member it was last sent as, and whether
    that member may move along (it was the only one, and no contact still has its
    address). Members whose person refused do not move: see :func:`refused_contacts`.
    """
    previous = {}
    for new, old_hashes in moved.items():
        candidates = [
            states[old]
            for old in sorted(old_hashes)
            if old in states and not blocks(known(states[old]))
        ]
        if not candidates:
            continue
        chosen = candidates[0]
        alone = len(old_hashes) == 1 and chosen.subscriber_hash not in still_used
        previous[new] = (chosen, alone)
    return previous


def refused_contacts(
    links: Mapping[tuple[str, str], Any],
    audience_id: str,
    groups: Mapping[str, list[Any]],
    states: Mapping[str, Any],
) -> dict[str, tuple[frozenset[tuple[str, str]], Any]]:
    """For each address: its contacts last sent as another member whose person refused
    (unsubscribed or bounced), and that member's state. Their consent stays refused."""
    refused = {}
    for member_hash, rows in groups.items():
        found, state = set(), None
        for row in rows:
            link = links.get((row.source, row.contact_key))
            if (
                link is None
                or link.audience_id != audience_id
                or link.subscriber_hash == member_hash
            ):
                continue
            before = states.get(link.subscriber_hash)
            if blocks(known(before)):
                found.add((row.source, row.contact_key))
                state = before
        if found:
            refused[member_hash] = (frozenset(found), state)
    return refused


class Links:
    """Which member each contact was last sent as: read for a page, written in bulk."""

    def __init__(self, session: Any, Link: Any) -> None:
        self.session = session
        self.Link = Link
        self.by_contact: dict[tuple[str, str], Any] = {}
        self._new: list[dict[str, Any]] = []
        self._moved: list[dict[str, Any]] = []

    def load(self, contacts: Iterable[tuple[str, str]]) -> None:
        """Read the links of these (source, key) contacts."""
        keys = {key for _, key in contacts}
        rows = self.session.execute(
            sa.select(*self.Link.__table__.c).where(
                many.one_of(self.session, self.Link.contact_key, keys)
            )
        )
        self.by_contact = {(link.source, link.contact_key): link for link in rows}

    def get(self, contact: tuple[str, str]) -> Any:
        return self.by_contact.get(contact)

    def snapshot(self) -> dict[tuple[str, str], Any]:
        return dict(self.by_contact)

    def restore(self, snapshot: dict[tuple[str, str], Any]) -> None:
        self.by_contact = dict(snapshot)
        self._new, self._moved = [], []

    def link(self, audience_id: str, member_hash: str, rows: Iterable[Any], *, move: bool) -> None:
        """Link each contact (staged row) to the member; with ``move`` off, a contact
        linked to another member stays linked to it."""
        for row in rows:
            contact = (row.source, row.contact_key)
            link = self.by_contact.get(contact)
            if link is None:
                self._new.append(
                    {"source": row.source, "contact_key": row.contact_key,
                     "audience_id": audience_id, "subscriber_hash": member_hash,
                     "fingerprint": row.fingerprint}
                )  # fmt: skip
                # One contact, one link, even if a page meets it twice.
                self.by_contact[contact] = _Pending(audience_id, member_hash, row.fingerprint)
            elif (
                move
                and not isinstance(link, _Pending)
                and (link.audience_id, link.subscriber_hash, link.fingerprint)
                != (audience_id, member_hash, row.fingerprint)
            ):
                self._moved.append(
                    {"link_id": link.id, "audience_id": audience_id,
                     "subscriber_hash": member_hash, "fingerprint": row.fingerprint}
                )  # fmt: skip

    def write(self) -> None:
        """The new and changed links, in two statements (not one per contact)."""
        table = self.Link.__table__
        if self._new:
            # A link written meanwhile (a withdraw linking contacts it found) stands.
            insert_new(
                self.session, self.Link, [dict(row, store=DEFAULT_STORE) for row in self._new]
            )
        if self._moved:
            self.session.execute(
                sa.update(table)
                .where(table.c.id == sa.bindparam("link_id"))
                .values(audience_id=sa.bindparam("audience_id"),
                        subscriber_hash=sa.bindparam("subscriber_hash"),
                        fingerprint=sa.bindparam("fingerprint")),
                self._moved,
            )  # fmt: skip
        self._new, self._moved = [], []


@dataclass(frozen=True)
class _Pending:
    """A link written with the page: a second sighting of its contact is not a move."""

    audience_id: str
    subscriber_hash: str
    fingerprint: str
