"""Which addresses a run handles, chosen by the database from the staged contacts.

Addresses are grouped and paged in SQL, so memory stays flat however large the shop.
An incremental run handles only addresses with a contact changed since it was last
handled (its link differs), addresses a contact left, and members Mailchimp changed;
departed members are those the shop created whose contacts are all gone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from ..models import DEFAULT_STORE
from .planner import ACTIVE

PAGE = 500


class RunSelection:
    """The staged contacts of one run, as the database groups them."""

    def __init__(self, session: Any, models: Any, run_id: int) -> None:
        self.session = session
        self.Staged = models.StagedContact
        self.Link = models.ContactState
        self.State = models.MemberState
        self.run_id = run_id

    def _mine(self, audience_id: str) -> Any:
        staged = self.Staged
        return sa.and_(staged.run_id == self.run_id, staged.audience_id == audience_id)

    def address_count(self, audience_id: str | None = None) -> int:
        staged = self.Staged
        key = (
            staged.subscriber_hash
            if audience_id
            else staged.audience_id + ":" + staged.subscriber_hash
        )
        where = self._mine(audience_id) if audience_id else staged.run_id == self.run_id
        return int(
            self.session.execute(sa.select(sa.func.count(sa.distinct(key))).where(where)).scalar()
            or 0
        )

    def without_consent_count(self, audience_id: str) -> int:
        """Addresses of the audience that no staged contact gave the marketing flag."""
        staged = self.Staged
        consenting = sa.func.max(sa.case((staged.marketing.is_(True), 1), else_=0))
        addresses = (
            sa.select(staged.subscriber_hash)
            .where(self._mine(audience_id))
            .group_by(staged.subscriber_hash)
            .having(consenting == 0)
        )
        count = sa.select(sa.func.count()).select_from(addresses.subquery())
        return int(self.session.execute(count).scalar() or 0)

    def pages(
        self, audience_id: str, *, changed_only: bool, also: Iterable[str] = ()
    ) -> Iterator[list[str]]:
        """Addresses to handle, :data:`PAGE` at a time, in hash order.

        With *changed_only*: addresses with a changed contact, and those in *also*.
        """
        staged = self.Staged
        query = sa.select(staged.subscriber_hash).where(self._mine(audience_id))
        if changed_only:
            query = query.where(
                sa.or_(self._contact_changed(), staged.subscriber_hash.in_(sorted(set(also))))
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
            .where(self._mine(audience_id), staged.subscriber_hash.in_(hashes))
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
            self._mine(audience_id), staged.subscriber_hash.in_(sorted(set(hashes)))
        )
        return set(self.session.execute(query).scalars())

    def left(self, audience_id: str) -> set[str]:
        """Addresses a contact was last sent as but no longer has."""
        staged, link = self.Staged, self.Link
        still = sa.select(staged.id).where(
            staged.run_id == self.run_id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
            staged.subscriber_hash == link.subscriber_hash,
        )
        query = sa.select(link.subscriber_hash).where(
            link.audience_id == audience_id, ~sa.exists(still)
        )
        return set(self.session.execute(query).scalars())

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

    def departed(self, audience_id: str, after_id: int = 0) -> list[Any]:
        """A page of members the shop created whose contacts are all gone."""
        query = self._departed_query(audience_id).where(self.State.id > after_id).limit(PAGE)
        return list(self.session.execute(query))

    def departed_count(self, audience_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(self._departed_query(audience_id).subquery())
        return int(self.session.execute(query).scalar() or 0)

    def _departed_query(self, audience_id: str) -> Any:
        state, staged = self.State, self.Staged
        still_here = sa.select(staged.id).where(
            self._mine(audience_id), staged.subscriber_hash == state.subscriber_hash
        )
        return (
            sa.select(*state.__table__.c)
            .where(
                state.audience_id == audience_id,
                state.sent.is_(True),
                state.status.in_(sorted(ACTIVE)),
                ~sa.exists(still_here),
            )
            .order_by(state.id)
        )

    def unstaged_links(self, audience_id: str) -> list[Any]:
        """Links (id, source, key) of contacts this run did not stage."""
        staged, link = self.Staged, self.Link
        here = sa.select(staged.id).where(
            staged.run_id == self.run_id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
        )
        query = sa.select(link.id, link.source, link.contact_key).where(
            link.audience_id == audience_id, ~sa.exists(here)
        )
        return list(self.session.execute(query))

    def forget_links(self, link_ids: Sequence[int]) -> None:
        for start in range(0, len(link_ids), PAGE):
            chunk = link_ids[start : start + PAGE]
            self.session.execute(sa.delete(self.Link).where(self.Link.id.in_(chunk)))
