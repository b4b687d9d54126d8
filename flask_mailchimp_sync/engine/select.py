"""Which addresses a run handles, chosen by the database from the staged contacts.

Addresses are grouped and paged in SQL, so memory stays flat however large the shop.
The contacts of an address are its staged rows and the *current links*: the links of
contacts the run read but left out as unchanged (see :class:`.staging.Snapshot`). An
incremental run handles only addresses with a contact changed since it was last
handled, addresses a contact left, and members Mailchimp changed; departed members are
those the shop created whose contacts are all gone. New members Mailchimp refused are
listed again from the ledger (:meth:`RunSelection.still_refused`).

Staged rows are written in bulk right before these queries read them: on PostgreSQL
:meth:`RunSelection.analyze` refreshes the planner's statistics first, or a plan made
for an empty table could loop over a million rows for each of a million others.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc, orm

from .. import many
from ..models import ABSENT, DEFAULT_STORE
from .planner import ACTIVE

log = logging.getLogger(__name__)

PAGE = 500


@dataclass(frozen=True)
class Refusal:
    """A new member Mailchimp refused, with one contact that still wants it."""

    email: str
    reason: str
    source: str
    contact_key: str


class RunSelection:
    """The staged contacts of one run, as the database groups them.

    :param sources: the names of the sources the run read.
    """

    def __init__(self, session: Any, models: Any, run_id: int, sources: Iterable[str]) -> None:
        self.session = session
        self.Staged = models.StagedContact
        self.Link = models.ContactState
        self.State = models.MemberState
        self.run_id = run_id
        self.sources = sorted(set(sources))

    def analyze(self) -> None:
        """Fresh statistics for the tables a run queries (PostgreSQL; other databases
        plan without them): the staged rows, just written, and the ledger's tables
        when a tenth of them changed since they were last analysed (after a first
        sync, say). The caller commits."""
        if self.session.get_bind(clause=self.Staged.__table__).dialect.name != "postgresql":
            return
        names = [self.Staged.__table__.name, *self._stale(self.Link, self.State)]
        try:
            with self.session.begin_nested():
                self.session.execute(sa.text(f"ANALYZE {', '.join(names)}"))
        except exc.DBAPIError as error:  # not the tables' owner: plan with what there is
            log.warning("Could not ANALYZE the Mailchimp sync tables: %s", error)

    def _stale(self, *models: Any) -> list[str]:
        """Which of these tables changed by a tenth since PostgreSQL last analysed them."""
        names = [model.__table__.name for model in models]
        query = sa.text(
            "SELECT relname FROM pg_stat_user_tables WHERE relid = ANY(CAST(:tables AS regclass[]))"
            " AND n_mod_since_analyze > 0.1 * GREATEST(n_live_tup, 1000)"
        )
        return list(self.session.execute(query, {"tables": names}).scalars())

    def _mine(self, audience_id: str) -> Any:
        staged = self.Staged
        return sa.and_(staged.run_id == self.run_id, staged.audience_id == audience_id)

    def _current(self, audience_id: str) -> Any:
        """SQL: this link stands for a contact of the audience the run left unstaged."""
        staged, link = self.Staged, self.Link
        staged_here = sa.select(staged.id).where(
            staged.run_id == self.run_id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
        )
        return sa.and_(
            link.store == DEFAULT_STORE,
            link.audience_id == audience_id,
            link.source.in_(self.sources),
            ~sa.exists(staged_here),
        )

    def current_links(self, audience_id: str, hashes: Iterable[str]) -> list[tuple[str, str]]:
        """The unstaged contacts (source name, key) of these addresses."""
        link, found = self.Link, []
        wanted = sorted(set(hashes))
        for start in range(0, len(wanted), PAGE):
            query = sa.select(link.source, link.contact_key).where(
                self._current(audience_id),
                many.one_of(self.session, link.subscriber_hash, wanted[start : start + PAGE]),
            )
            found += [(source, key) for source, key in self.session.execute(query)]
        return found

    def address_count(self, audience_id: str) -> int:
        """The audience's addresses: of staged contacts and of current links."""
        staged, link = self.Staged, self.Link
        addresses = sa.union(
            sa.select(staged.subscriber_hash).where(self._mine(audience_id)),
            sa.select(link.subscriber_hash).where(self._current(audience_id)),
        ).subquery()
        query = sa.select(sa.func.count()).select_from(addresses)
        return int(self.session.execute(query).scalar() or 0)

    def without_consent_count(self, audience_id: str) -> int:
        """Addresses of the audience none of whose contacts has the marketing flag.

        Unstaged contacts all have it: a resync leaves out only the unchanged contacts
        with the flag (see :class:`.staging.Snapshot`), so an address with a current
        link has consent.
        """
        staged, link = self.Staged, self.Link
        consenting = sa.func.max(sa.case((staged.marketing.is_(True), 1), else_=0))
        addresses = (
            sa.select(staged.subscriber_hash.label("subscriber_hash"))
            .where(self._mine(audience_id))
            .group_by(staged.subscriber_hash)
            .having(consenting == 0)
            .subquery()
        )
        linked = sa.select(link.id).where(
            self._current(audience_id), link.subscriber_hash == addresses.c.subscriber_hash
        )
        count = sa.select(sa.func.count()).select_from(addresses).where(~sa.exists(linked))
        return int(self.session.execute(count).scalar() or 0)

    def pages(
        self, audience_id: str, *, changed_only: bool, also: Iterable[str] = ()
    ) -> Iterator[list[str]]:
        """Staged addresses to handle, :data:`PAGE` at a time, in hash order.

        With *changed_only*: addresses with a changed contact, and those in *also*.
        """
        staged = self.Staged
        query = sa.select(staged.subscriber_hash).where(self._mine(audience_id))
        if changed_only:
            query = query.where(
                sa.or_(
                    self._contact_changed(),
                    many.one_of(self.session, staged.subscriber_hash, sorted(set(also))),
                )
            )
        last = ""
        while True:
            page = query.where(staged.subscriber_hash > last)
            hashes = list(
                self.session.execute(
                    page.group_by(staged.subscriber_hash)
                    .order_by(staged.subscriber_hash)
                    .limit(PAGE)
                ).scalars()
            )
            if not hashes:
                return
            last = hashes[-1]
            yield hashes

    def groups(self, audience_id: str, hashes: Sequence[str]) -> dict[str, list[Any]]:
        """The staged contacts of these addresses, in registration order."""
        staged = self.Staged
        rows = self.session.execute(
            sa.select(*staged.__table__.c)
            .where(
                self._mine(audience_id), many.one_of(self.session, staged.subscriber_hash, hashes)
            )
            .order_by(staged.id)
        )
        grouped: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            grouped[row.subscriber_hash].append(row)
        return grouped

    def in_use(self, audience_id: str, hashes: Iterable[str]) -> set[str]:
        """Which of these addresses some staged contact still has."""
        staged = self.Staged
        query = sa.select(staged.subscriber_hash).where(
            self._mine(audience_id), many.one_of(self.session, staged.subscriber_hash, set(hashes))
        )
        return set(self.session.execute(query).scalars())

    def left(self, audience_id: str) -> set[str]:
        """Addresses a contact was last sent as but no longer has: those of contacts
        staged under another address (or marked absent), and of contacts the run did
        not read (another store's, or of a source it does not cover)."""
        staged, link, other = self.Staged, self.Link, orm.aliased(self.Staged)
        still = sa.select(other.id).where(
            other.run_id == self.run_id,
            other.source == link.source,
            other.contact_key == link.contact_key,
            other.subscriber_hash == link.subscriber_hash,
        )
        # From the staged rows (a resync stages few) to their links, not the other way.
        moved = (
            sa.select(link.subscriber_hash)
            .join(staged, sa.and_(staged.source == link.source,
                                  staged.contact_key == link.contact_key))
            .where(staged.run_id == self.run_id, link.store == DEFAULT_STORE,
                   link.audience_id == audience_id,
                   staged.subscriber_hash != link.subscriber_hash, ~sa.exists(still))
        )  # fmt: skip
        unread = sa.select(link.subscriber_hash).where(
            link.audience_id == audience_id, self._unread(link)
        )
        return set(self.session.execute(moved).scalars()) | set(
            self.session.execute(unread).scalars()
        )

    def _unread(self, link: Any) -> Any:
        """SQL: a link of a contact this run does not read."""
        return sa.or_(link.store != DEFAULT_STORE, link.source.not_in(self.sources))

    def _contact_changed(self) -> Any:
        """SQL: this staged contact differs from when it was last handled (or is new)."""
        staged, link = self.Staged, self.Link
        same = sa.select(link.id).where(
            link.store == DEFAULT_STORE,  # lets the database use the unique index
            link.source == staged.source,
            link.contact_key == staged.contact_key,
            link.audience_id == staged.audience_id,
            link.subscriber_hash == staged.subscriber_hash,
            link.fingerprint == staged.fingerprint,
        )
        return ~sa.exists(same)

    def still_refused(self, audience_id: str, also: Iterable[str] = ()) -> dict[str, Refusal]:
        """New members Mailchimp refused (their data "looked fake", say: the same data is
        not sent again) that a contact with the flag still has, by address, with one
        such contact each. Addresses in *also* are left out (the run handles them)."""
        state = self.State
        query = sa.select(state.subscriber_hash, state.email, state.last_error).where(
            state.store == DEFAULT_STORE,
            state.audience_id == audience_id,
            state.status.is_(None),
            state.last_error.is_not(None),
        )
        refused = {row.subscriber_hash: row for row in self.session.execute(query)}
        hashes, found = sorted(set(refused) - set(also)), dict[str, Refusal]()
        for start in range(0, len(hashes), PAGE):
            for row in self._consenting_here(audience_id, hashes[start : start + PAGE]):
                member = refused[row.subscriber_hash]
                found.setdefault(
                    row.subscriber_hash,
                    Refusal(member.email, member.last_error, row.source, row.contact_key),
                )
        return found

    def _consenting_here(self, audience_id: str, hashes: Sequence[str]) -> list[Any]:
        """Links (hash, source, key) of contacts that still have these addresses, with
        the flag: left out as unchanged (those all have it), or staged there with it."""
        staged, link = self.Staged, self.Link
        elsewhere_or_declined = sa.select(staged.id).where(
            staged.run_id == self.run_id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
            sa.or_(
                staged.audience_id != link.audience_id,  # another audience, or ABSENT
                staged.subscriber_hash != link.subscriber_hash,
                staged.marketing.is_not(True),
            ),
        )
        query = sa.select(link.subscriber_hash, link.source, link.contact_key).where(
            link.store == DEFAULT_STORE,
            link.audience_id == audience_id,
            link.source.in_(self.sources),
            many.one_of(self.session, link.subscriber_hash, hashes),
            ~sa.exists(elsewhere_or_declined),
        )
        return list(self.session.execute(query.order_by(link.id)))

    def departed(self, audience_id: str, after_id: int = 0) -> list[Any]:
        """A page of members the shop created whose contacts are all gone."""
        query = self._departed_query(audience_id).where(self.State.id > after_id).limit(PAGE)
        return list(self.session.execute(query))

    def departed_count(self, audience_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(self._departed_query(audience_id).subquery())
        return int(self.session.execute(query).scalar() or 0)

    def _departed_query(self, audience_id: str) -> Any:
        state, staged, link = self.State, self.Staged, self.Link
        still_here = sa.select(staged.id).where(
            self._mine(audience_id), staged.subscriber_hash == state.subscriber_hash
        )
        still_linked = sa.select(link.id).where(
            self._current(audience_id), link.subscriber_hash == state.subscriber_hash
        )
        return (
            sa.select(*state.__table__.c)
            .where(
                state.audience_id == audience_id,
                state.sent.is_(True),
                state.status.in_(sorted(ACTIVE)),
                ~sa.exists(still_here),
                ~sa.exists(still_linked),
            )
            .order_by(state.id)
        )

    def unstaged_links(self, audience_id: str) -> list[Any]:
        """Links (id, source, key) of contacts missing from this run's snapshot: marked
        absent, or of a source the run did not read."""
        staged, link = self.Staged, self.Link
        absent = (
            sa.select(link.id, link.source, link.contact_key)
            .join(staged, sa.and_(staged.source == link.source,
                                  staged.contact_key == link.contact_key))
            .where(staged.run_id == self.run_id, staged.audience_id == ABSENT,
                   link.store == DEFAULT_STORE, link.audience_id == audience_id)
        )  # fmt: skip
        unread = sa.select(link.id, link.source, link.contact_key).where(
            link.audience_id == audience_id, link.source.not_in(self.sources)
        )
        found = {row.id: row for row in self.session.execute(absent)}
        found.update((row.id, row) for row in self.session.execute(unread))
        return list(found.values())

    def forget_links_of_deleted(self, audience_id: str, sources: Iterable[Any]) -> None:
        """Forget the links of contacts gone from the shop (of these sources).

        A contact still there but not staged (its address is blank or invalid now)
        keeps its link: the block of its member follows it to its next address.
        """
        by_name = {source.name: source for source in sources}
        by_source: dict[str, list[Any]] = {}
        for row in self.unstaged_links(audience_id):
            by_source.setdefault(row.source, []).append(row)
        gone = []
        for name, rows in by_source.items():
            source = by_name.get(name)
            keys = [row.contact_key for row in rows]
            still = source.existing_keys(self.session, keys) if source is not None else set()
            gone += [row.id for row in rows if row.contact_key not in still]
        self.forget_links(gone)

    def forget_links(self, link_ids: Sequence[int]) -> None:
        for start in range(0, len(link_ids), PAGE):
            chunk = link_ids[start : start + PAGE]
            self.session.execute(sa.delete(self.Link).where(self.Link.id.in_(chunk)))
