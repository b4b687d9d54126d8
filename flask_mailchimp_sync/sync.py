"""Runs a sync: the shop's contacts, through the planner, into Mailchimp.

A run goes: stage the shop's contacts (:mod:`.staging`); read what Mailchimp changed
(every member the first time, so members already there are matched instead of sent
again; later only unsubscribes, bounces and archives); then, 500 addresses at a time,
decide (:mod:`.planner`) and send: new members by batch subscribe; changes to existing
members one by one when few (at most ``MAILCHIMP_SYNC_MAX_CONNECTIONS`` at once), else as
one batch operation; archives of departed contacts last. A resync handles only
addresses whose contacts changed.
Progress and outcomes are written to the run record after every page, so a run killed
midway leaves a true record and the next run simply does what is left.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from . import emails, ledger, locks, signals, staging, webhooks
from ._state import real_app
from .client import MailchimpApi, is_transient, tag_changes
from .connection import default_tag
from .exceptions import MailchimpApiError, MailchimpSyncError
from .models import DEFAULT_STORE, as_utc, utcnow
from .planner import ACTIVE, Action, Decision, Known, Wanted, blocked_by, blocks, decide
from .staging import Target

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

PAGE = 500
#: Seconds a sync waits for a real-time delivery to release an audience.
LOCK_PATIENCE = 30.0
#: Mailchimp's own changes are read again with this overlap, against clock skew.
PULL_OVERLAP = timedelta(minutes=5)
COUNTED = {
    Action.ADD: "added",
    Action.RESTORE: "added",
    Action.UPDATE: "updated",
    Action.MOVE: "updated",
    Action.ARCHIVE: "archived",
    Action.BLOCKED: "blocked",
    Action.REJECTED: "failed",
    Action.UNCHANGED: "unchanged",
}


class SyncRefused(MailchimpSyncError):
    """A run could not start (not connected, nothing to sync, already running)."""


@dataclass
class Member:
    """One address of one audience during a run: the wish, the knowledge, the decision."""

    hash: str
    wanted: Wanted | None
    known: Known | None
    state: Any  # the MemberState row, or None
    contacts: list[Any] = field(default_factory=list)  # staged rows
    #: The member (state row) a contact of this address was last sent as, when its
    #: address changed since: the person's own member, whose block it keeps.
    previous: Any = None
    #: No contact still has the previous address: its member may move here.
    can_move: bool = False
    decision: Decision = field(default_factory=lambda: Decision(Action.UNCHANGED))
    #: ``state`` as read for planning (``state`` may become an ORM object to record).
    read_state: Any = None

    @property
    def want(self) -> Wanted:
        """The wish, for members being written (they always have shop contacts)."""
        assert self.wanted is not None
        return self.wanted


@dataclass
class Outcome:
    member: Member
    counted: str  # added, updated, archived, unchanged, blocked, failed
    status: str | None = None
    reason: str = ""


def targets_for(extension: MailchimpSync, settings: Any, role: str | None) -> list[Target]:
    """The roles this run covers (those with an audience chosen).

    ``role`` picks audiences: every role sharing an audience with it is synced too,
    or that audience's other members would look departed and be archived.
    """
    picked = {a.audience_id for a in settings.audiences if role is None or a.role == role}
    chosen = [a for a in settings.audiences if a.audience_id in picked]
    return [
        Target(a.role, a.audience_id, a.tag or default_tag(a.role), extension.sources_for(a.role))
        for a in chosen
        if extension.sources_for(a.role)
    ]


class SyncRunner:
    """Carries out one :class:`SyncRun` (needs the app context)."""

    def __init__(
        self,
        extension: MailchimpSync,
        run_id: int,
        *,
        contacts: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """:param contacts: ``(source name, key)`` pairs: sync only these contacts (and
        everyone sharing their addresses) — a real-time delivery, not a full sync."""
        self.extension = extension
        self.contacts = contacts
        self.scope: set[str] | None = None
        self.models = extension.models
        self.session: Any = extension.db.session
        self.config = current_app.config
        self.app = real_app()
        self.run: Any = self.session.get(self.models.SyncRun, run_id)
        if self.run is None:
            raise SyncRefused(f"There is no sync run #{run_id}.")
        self.learned: dict[str, set[str]] = defaultdict(set)  # members whose status changed
        self.links: dict[tuple[str, str], Any] = {}  # the page's contacts' links
        self._new_links: list[dict[str, Any]] = []
        self._moved_links: list[dict[str, Any]] = []
        self.holder = f"{'realtime' if self.run.trigger == 'realtime' else 'run'}-{run_id}"
        self.merge_tags: dict[str, set[str]] = {}

    # -- the run ------------------------------------------------------------------------

    def execute(self, on_progress: Callable[[Any], None] | None = None) -> Any:
        self.on_progress = on_progress or (lambda run: None)
        store = self.extension.settings_store()
        settings = store.get()
        api_key = store.api_key()
        if settings is None or api_key is None:
            return self._fail("Connect a Mailchimp account first.")
        targets = targets_for(self.extension, settings, self.run.role)
        if not targets:
            return self._fail(
                "No audience is chosen for any role yet: pick one on the Mailchimp page."
            )
        audience_ids = sorted({t.audience_id for t in targets})
        self.run.audiences = ",".join(audience_ids)
        # A preview changes nothing in Mailchimp, so it may run beside a sync.
        lock_names = [] if self.run.dry_run else locks.audience_locks(audience_ids)
        if not self._take_locks(lock_names):
            return self._fail("A sync of this audience is already running.")
        self.lock_names = lock_names
        try:
            self._start()
            self.api = MailchimpApi(api_key, self.config)
            # Double opt-in: new members confirm by email first.
            self.new_member_status = "pending" if settings.double_opt_in else "subscribed"
            self._claim_outbox(targets)
            self._stage(targets)
            for audience_id in audience_ids:
                self._phase(f"reading Mailchimp ({audience_id})")
                self.merge_tags[audience_id] = self.api.merge_field_tags(audience_id)
                self._pull(
                    audience_id, [a for a in settings.audiences if a.audience_id == audience_id]
                )
            self.run.total = self._count_total(audience_ids)
            self._phase("sending" if not self.run.dry_run else "previewing")
            for audience_id in audience_ids:
                self._sync_audience(audience_id)
                self._archive_departed(audience_id)
            return self._finish()
        except MailchimpSyncError as problem:
            self.session.rollback()
            return self._fail(str(problem))
        except Exception:
            self.session.rollback()
            log.exception("Mailchimp sync run %s failed", self.run.id)
            self._fail("The sync stopped on an unexpected error; the log has the details.")
            raise
        finally:
            self._cleanup()

    def _take_locks(self, names: list[str]) -> bool:
        """Take the audiences' locks; a sync waits a little for a real-time delivery."""
        ttl = float(self.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"])
        patience = 0.0 if self.run.trigger == "realtime" else LOCK_PATIENCE
        deadline = time.monotonic() + patience
        while not locks.acquire(self.session, self.models.Lock, names, self.holder, ttl):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def _start(self) -> None:
        self.run.state = "running"
        self.run.started_at = utcnow()
        self._phase("preparing")
        signals.sync_started.send(self.app, run=self.run)

    def _phase(self, phase: str) -> None:
        self.run.phase = phase
        self.session.commit()
        self.on_progress(self.run)

    def _finish(self) -> Any:
        self.run.state = "done"
        self.run.phase = None
        self.run.finished_at = utcnow()
        if self.contacts is None and not self.run.dry_run:
            self._mark_outbox_delivered()
        self.session.commit()
        self.on_progress(self.run)
        signals.sync_finished.send(self.app, run=self.run)
        return self.run

    def _fail(self, message: str) -> Any:
        self.run.state = "failed"
        self.run.error = message
        self.run.finished_at = utcnow()
        self.session.commit()
        signals.sync_finished.send(self.app, run=self.run)
        return self.run

    def _claim_outbox(self, targets: Sequence[Target]) -> None:
        """Mark the waiting changes this sync will read, before it reads the shop.

        Only rows committed now are marked (a transaction still open elsewhere keeps
        its rows to itself), and the staging that follows reads what they describe; a
        change committed later stays for a delivery. A flush time would not do: a
        change flushed before the sync began may commit while it runs, unseen.
        """
        if self.contacts is not None or self.run.dry_run:
            return
        Outbox = self.models.Outbox
        sources = sorted({source.name for target in targets for source in target.sources})
        self.session.execute(
            sa.update(Outbox)
            .where(Outbox.delivered_at.is_(None), Outbox.source.in_(sources))
            .values(seen_by_run=self.run.id)
        )
        self.session.commit()

    def _mark_outbox_delivered(self) -> None:
        """The changes this sync read (see :meth:`_claim_outbox`) are delivered."""
        Outbox = self.models.Outbox
        self.session.execute(
            sa.update(Outbox)
            .where(Outbox.delivered_at.is_(None), Outbox.seen_by_run == self.run.id)
            .values(delivered_at=utcnow(), last_error=None)
        )

    def _cleanup(self) -> None:
        staged = self.models.StagedContact
        self.session.execute(sa.delete(staged).where(staged.run_id == self.run.id))
        self.session.commit()
        if getattr(self, "lock_names", None):
            locks.release(self.session, self.models.Lock, self.lock_names, self.holder)

    def _heartbeat(self) -> None:
        """Keep the locks alive (at most every tenth of their lifetime: cheap pages)."""
        ttl = float(self.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"])
        now = time.monotonic()
        if now - getattr(self, "_beat", 0.0) >= ttl / 10:
            locks.refresh(self.session, self.models.Lock, self.lock_names, self.holder, ttl)
            self._beat = now

    # -- stage and pull -----------------------------------------------------------------

    def _stage(self, targets: Sequence[Target]) -> None:
        chunk = int(self.config["MAILCHIMP_SYNC_CHUNK_SIZE"])
        only = None if self.contacts is None else self._affected(targets)
        for skipped in staging.stage(
            self.session,
            self.models.StagedContact,
            self.run.id,
            targets,
            chunk_size=chunk,
            only=only,
        ):
            self.run.skipped += 1
            self._item(
                "skipped",
                skipped.reason,
                source=skipped.contact.source,
                contact_key=skipped.contact.key,
                email=skipped.contact.email,
            )
        self.session.commit()

    def _affected(self, targets: Sequence[Target]) -> dict[str, list[Any]]:
        """The contacts a real-time delivery covers, by source name.

        The changed contacts, plus every contact last sent as the same member as they
        are now or were last sent as (found through the stored links, so another
        spelling of the address is found too): a member's tags and consent come from
        all the contacts that make it up.
        """
        assert self.contacts is not None
        sources = {s.name: s for t in targets for s in t.sources}
        found: dict[str, dict[str, Any]] = defaultdict(dict)
        hashes: set[str] = set()
        for source_name, key in self.contacts:
            contact = self._contact(sources, source_name, key)
            if contact is not None:
                found[source_name][contact.key] = contact
                if emails.identity(contact.email):
                    hashes.add(emails.subscriber_hash(contact.email or ""))
        hashes |= {state.subscriber_hash for state in self._linked_members(self.contacts)}
        Link = self.models.ContactState
        for audience_id in {t.audience_id for t in targets}:
            for source_name, key in ledger.linked_contacts(self.session, Link, audience_id, hashes):
                if key not in found[source_name]:
                    contact = self._contact(sources, source_name, key)
                    if contact is not None:
                        found[source_name][contact.key] = contact
        self.scope = hashes
        return {name: list(contacts.values()) for name, contacts in found.items()}

    def _contact(self, sources: dict[str, Any], source_name: str, key: str) -> Any:
        source = sources.get(source_name)
        return source.get_contact(self.session, key) if source is not None else None

    def _linked_members(self, contacts: Sequence[tuple[str, str]]) -> list[Any]:
        ContactState, State = self.models.ContactState, self.models.MemberState
        wanted = set(contacts)
        links = self.session.execute(
            sa.select(ContactState, State)
            .join(
                State,
                sa.and_(
                    State.audience_id == ContactState.audience_id,
                    State.subscriber_hash == ContactState.subscriber_hash,
                ),
            )
            .where(ContactState.contact_key.in_({key for _, key in contacts}))
        ).all()
        return [state for link, state in links if (link.source, link.contact_key) in wanted]

    def _pull(self, audience_id: str, role_audiences: Sequence[Any]) -> None:
        """Read Mailchimp's side: every member the first time, later what left.

        The first read matches members who are already in Mailchimp with the shop's
        data, so a shop moving from another integration is not sent again.
        """
        pulled = [a.pulled_at for a in role_audiences if a.pulled_at is not None]
        started = utcnow()
        if pulled and len(pulled) == len(role_audiences):
            since = as_utc(min(pulled)) - PULL_OVERLAP
            members: Iterable[dict[str, Any]] = (
                m
                for status in ("unsubscribed", "cleaned", "archived")
                for m in self.api.iter_members(audience_id, since=since, status=status)
            )
        else:
            members = self.api.iter_members(audience_id)
        for page in _pages(members, PAGE):
            self._learn(audience_id, page, self.merge_tags[audience_id])
        if not self.run.dry_run:
            for role_audience in role_audiences:
                role_audience.pulled_at = started
        self.session.commit()

    def _learn(self, audience_id: str, remote: list[dict[str, Any]], merge_tags: set[str]) -> None:
        remote = [m for m in remote if emails.identity(m.get("email_address"))]
        hashes = [emails.subscriber_hash(m["email_address"]) for m in remote]
        # A member may come back twice in one run (pages shift, or the archived pass
        # repeats it): the states are upserted, and a second sighting updates the first.
        states = ledger.member_states(
            self.session,
            self.models.MemberState,
            audience_id,
            dict(zip(hashes, (m["email_address"] for m in remote), strict=True)),
        )
        staged = self._staged(audience_id, hashes)
        for member, member_hash in zip(remote, hashes, strict=True):
            state = states[member_hash]
            status, email = str(member.get("status") or ""), member["email_address"]
            if state.status != status:
                self.learned[audience_id].add(member_hash)
            if (
                status in ("unsubscribed", "cleaned")
                and state.status != status
                and not self.run.dry_run
            ):
                shop_contacts = {(c.source, c.contact_key) for c in staged.get(member_hash, [])}
                webhooks.withdraw(  # reconcile
                    self.extension, audience_id, email, status, contacts=shop_contacts
                )
            _set_status(state, status, email)
            contacts = staged.get(member_hash)
            if state.fingerprint is None and contacts and not self.run.dry_run:
                self._match(state, member, staging.wanted_member(contacts, merge_tags))

    def _match(self, state: Any, remote: dict[str, Any], wanted: Wanted) -> None:
        """A member already in Mailchimp with exactly the shop's data needs no write."""
        remote_tags = {t["name"] for t in remote.get("tags", [])}
        theirs = Wanted(
            email=remote["email_address"],
            consent=wanted.consent,
            tags=frozenset(wanted.tags & remote_tags),
            merge_fields={k: remote.get("merge_fields", {}).get(k) for k in wanted.merge_fields},
        )
        if theirs.fingerprint == wanted.fingerprint:
            # Matched, not sent: the shop did not create this member, so it never
            # archives them.
            state.fingerprint = wanted.fingerprint
            state.tags = ",".join(sorted(wanted.tags))

    # -- plan and send ------------------------------------------------------------------

    def _count_total(self, audience_ids: Sequence[str]) -> int:
        staged = self.models.StagedContact
        addresses = self.session.execute(
            sa.select(
                sa.func.count(sa.distinct(staged.audience_id + ":" + staged.subscriber_hash))
            ).where(staged.run_id == self.run.id)
        ).scalar()
        departed = sum(
            self.session.execute(
                sa.select(sa.func.count()).select_from(self._departed_query(a).subquery())
            ).scalar()
            or 0
            for a in audience_ids
        )
        return int(addresses or 0) + int(departed)

    def _sync_audience(self, audience_id: str) -> None:
        """Every address of the audience that has a contact changed since it was last
        handled (all of them with ``full``), 500 at a time; the rest are unchanged."""
        staged = self.models.StagedContact
        query = sa.select(staged.subscriber_hash).where(
            staged.run_id == self.run.id, staged.audience_id == audience_id
        )
        everyone = self.session.execute(
            sa.select(sa.func.count(sa.distinct(staged.subscriber_hash))).where(
                staged.run_id == self.run.id, staged.audience_id == audience_id
            )
        ).scalar()
        if not self.run.full and self.contacts is None:
            # Also addresses whose member Mailchimp changed since the last look (to
            # report them), and addresses a contact left (moved away, or deleted).
            learned = sorted(self.learned.get(audience_id, set()) | self._left(audience_id))
            query = query.where(
                sa.or_(self._contact_changed(), staged.subscriber_hash.in_(learned))
            )
        last, handled = "", 0
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
                break
            last, handled = hashes[-1], handled + len(hashes)
            self._process(audience_id, self._members(audience_id, hashes))
        if self.contacts is None and not self.run.dry_run:
            self._forget_links_of_deleted_contacts(audience_id)
        untouched = int(everyone or 0) - handled
        self.run.unchanged += untouched
        self.run.processed += untouched
        self.session.commit()

    def _forget_links_of_deleted_contacts(self, audience_id: str) -> None:
        """Forget the links of contacts gone from the shop.

        A contact still there but not staged (its address is blank or invalid now)
        keeps its link: the block of its member follows it to its next address.
        """
        staged, link = self.models.StagedContact, self.models.ContactState
        here = sa.select(staged.id).where(
            staged.run_id == self.run.id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
        )
        unstaged = self.session.execute(
            sa.select(link.id, link.source, link.contact_key).where(
                link.audience_id == audience_id, ~sa.exists(here)
            )
        ).all()
        sources = {source.name: source for source in self.extension.sources}
        by_source: dict[str, list[Any]] = defaultdict(list)
        for row in unstaged:
            by_source[row.source].append(row)
        gone = []
        for name, rows in by_source.items():
            source = sources.get(name)
            keys = [row.contact_key for row in rows]
            still = source.existing_keys(self.session, keys) if source is not None else set()
            gone += [row.id for row in rows if row.contact_key not in still]
        for start in range(0, len(gone), PAGE):
            self.session.execute(sa.delete(link).where(link.id.in_(gone[start : start + PAGE])))

    def _left(self, audience_id: str) -> set[str]:
        """Addresses a contact was last sent as but no longer has."""
        staged, link = self.models.StagedContact, self.models.ContactState
        still = sa.select(staged.id).where(
            staged.run_id == self.run.id,
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
        staged, link = self.models.StagedContact, self.models.ContactState
        same = sa.select(link.id).where(
            link.store == DEFAULT_STORE,  # lets the database use the unique index
            link.source == staged.source,
            link.contact_key == staged.contact_key,
            link.audience_id == staged.audience_id,
            link.subscriber_hash == staged.subscriber_hash,
            link.fingerprint == staged.fingerprint,
        )
        return ~sa.exists(same)

    def _archive_departed(self, audience_id: str) -> None:
        """Members the shop sent whose contacts are gone from the shop."""
        State = self.models.MemberState
        last_id = 0
        while True:
            query = self._departed_query(audience_id).where(State.id > last_id).limit(PAGE)
            states = list(self.session.execute(query))
            if not states:
                return
            last_id = states[-1].id
            members = [Member(s.subscriber_hash, None, _known(s), s) for s in states]
            for member in members:
                member.decision = decide(None, member.known)
            self._process(audience_id, members)

    def _departed_query(self, audience_id: str) -> Any:
        state, staged = self.models.MemberState, self.models.StagedContact
        still_here = sa.select(staged.id).where(
            staged.run_id == self.run.id,
            staged.audience_id == audience_id,
            staged.subscriber_hash == state.subscriber_hash,
        )
        query = sa.select(*state.__table__.c)
        if self.scope is not None:  # a real-time delivery looks only at its own members
            query = query.where(state.subscriber_hash.in_(sorted(self.scope)))
        return query.where(
            state.audience_id == audience_id,
            state.sent.is_(True),
            state.status.in_(sorted(ACTIVE)),
            ~sa.exists(still_here),
        ).order_by(state.id)

    def _members(self, audience_id: str, hashes: list[str]) -> list[Member]:
        states = self._states(audience_id, hashes)
        staged = self._staged(audience_id, hashes)
        self.links = self._contact_links(staged)
        previous = self._previous_members(audience_id, staged)
        members = []
        for member_hash in hashes:
            contacts = staged[member_hash]
            wanted = staging.wanted_member(contacts, self.merge_tags[audience_id])
            state = states.get(member_hash)
            before, can_move = previous.get(member_hash, (None, False))
            member = Member(member_hash, wanted, _known(state), state, contacts, before, can_move)
            member.read_state = state
            member.decision = decide(
                wanted,
                member.known,
                previous=_known(before),
                can_move=can_move,
                full=bool(self.run.full),
            )
            members.append(member)
        return members

    def _process(self, audience_id: str, members: list[Member]) -> None:
        if self.run.dry_run:
            outcomes = [
                Outcome(m, COUNTED[m.decision.action], reason=m.decision.reason) for m in members
            ]
        else:
            outcomes = self._send(audience_id, members)
        links = dict(self.links)
        try:
            self._record_page(audience_id, outcomes)
        except Exception:
            # One member the ledger cannot take (a row someone else wrote meanwhile, a
            # value the database refuses) must not stop the run: find it, go on.
            log.exception("Recording a page of Mailchimp sync run %s failed", self.run.id)
            self.session.rollback()
            self._record_one_by_one(audience_id, outcomes, links)
        self.run.processed += len(members)
        if not self.run.dry_run:
            self._heartbeat()
        self.session.commit()
        self.on_progress(self.run)

    def _record_page(self, audience_id: str, outcomes: Sequence[Outcome]) -> None:
        if not self.run.dry_run:
            self._prepare_states(audience_id, outcomes)
        for outcome in outcomes:
            self._record(audience_id, outcome)
        self._write_links()
        self.session.flush()

    def _record_one_by_one(
        self, audience_id: str, outcomes: Sequence[Outcome], links: dict[Any, Any]
    ) -> None:
        """Record each outcome in a savepoint of its own; one that fails is a failure."""
        for outcome in outcomes:
            outcome.member.state = outcome.member.read_state
            self.links = dict(links)
            try:
                with self.session.begin_nested():
                    self._record_page(audience_id, [outcome])
                links = self.links
            except Exception as error:
                log.exception("Mailchimp sync run %s could not record a member", self.run.id)
                self._new_links, self._moved_links = [], []
                reason = f"The shop could not record this member ({type(error).__name__})."
                self._report(Outcome(outcome.member, "failed", reason=reason))

    def _send(self, audience_id: str, members: list[Member]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        adds = [m for m in members if m.decision.action is Action.ADD]
        singles = [m for m in members if m.decision.action in _ONE_BY_ONE]
        if adds:
            added, existing = self._batch_add(audience_id, adds)
            outcomes += added
            for member in existing:  # already in Mailchimp: update, never resubscribe
                member.decision = Decision(Action.UPDATE, add_tags=member.want.tags)
            singles += existing
        outcomes += [
            Outcome(m, COUNTED[m.decision.action], reason=m.decision.reason)
            for m in members
            if m.decision.action in (Action.UNCHANGED, Action.BLOCKED, Action.REJECTED)
        ]
        outcomes += self._send_singles(audience_id, singles)
        return outcomes

    def _send_singles(self, audience_id: str, members: list[Member]) -> list[Outcome]:
        """Changes to existing members: one by one when few, else as one batch operation."""
        if len(members) <= int(self.config["MAILCHIMP_SYNC_BATCH_THRESHOLD"]):
            workers = max(1, min(int(self.config["MAILCHIMP_SYNC_MAX_CONNECTIONS"]), 10))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(lambda m: self._send_one(audience_id, m), members))
        results = self.api.run_operations([self._operation(audience_id, m) for m in members])
        outcomes, retry, tagging = [], [], []
        for member, (status_code, reply) in zip(members, results, strict=True):
            if is_transient(status_code, titled=bool(reply.get("title"))):
                retry.append(member)  # transient inside the batch: once more, one by one
                continue
            outcome = self._outcome(member, status_code, reply)
            outcomes.append(outcome)
            if outcome.counted in ("added", "updated") and _tag_change(member):
                tagging.append(member)
        if tagging:
            self.api.run_operations([self._tag_operation(audience_id, m) for m in tagging])
        return outcomes + [self._send_one(audience_id, m) for m in retry]

    def _send_one(self, audience_id: str, member: Member) -> Outcome:
        action = member.decision.action
        try:
            if action is Action.ARCHIVE:
                gone = self.api.archive_member(audience_id, member.hash)
                return self._outcome(member, 204 if gone else 404, {})
            body = self._member_body(member)
            if action is Action.MOVE:
                reply = self.api.change_member(audience_id, member.previous.subscriber_hash, body)
            else:
                reply = self.api.upsert_member(audience_id, member.hash, body)
        except MailchimpApiError as error:
            if is_transient(error.status, titled=bool(error.title)):
                raise  # Mailchimp is unavailable even after retries: stop the run here
            return self._outcome(
                member, error.status, {"title": error.title, "detail": error.detail}
            )
        outcome = self._outcome(member, 200, reply)
        if outcome.counted in ("added", "updated") and _tag_change(member):
            self.api.set_tags(
                audience_id, member.hash, member.decision.add_tags, member.decision.remove_tags
            )
        return outcome

    def _outcome(self, member: Member, status_code: int, reply: dict[str, Any]) -> Outcome:
        """What one Mailchimp answer means for the run and for what the shop knows."""
        action = member.decision.action
        if action is Action.ARCHIVE:
            archived = status_code == 204
            return Outcome(member, "archived" if archived else "unchanged", status="archived")
        if status_code >= 400:
            if reply.get("title") == "Member In Compliance State" and action is Action.RESTORE:
                return Outcome(member, "blocked", reason="unsubscribed before it was archived")
            detail = reply.get("detail") or reply.get("title") or f"HTTP {status_code}"
            return Outcome(member, "failed", reason=f"Mailchimp refused the request: {detail}")
        status = str(reply.get("status", ""))
        blocked = blocked_by(status)
        if blocked is not None:
            return Outcome(member, "blocked", status=status, reason=blocked.reason)
        return Outcome(member, COUNTED[action], status=status)

    def _member_body(self, member: Member) -> dict[str, Any]:
        wanted = member.want
        new_status = self.new_member_status
        body: dict[str, Any] = {
            "email_address": wanted.email,
            "merge_fields": dict(wanted.merge_fields),
        }
        if member.decision.action is Action.MOVE:
            return body
        body["status_if_new"] = new_status
        if member.decision.action is Action.RESTORE:
            body["status"] = new_status  # only a member the shop archived itself
        return body

    def _operation(self, audience_id: str, member: Member) -> dict[str, Any]:
        members = f"/lists/{audience_id}/members"
        action = member.decision.action
        if action is Action.ARCHIVE:
            return {"method": "DELETE", "path": f"{members}/{member.hash}"}
        body = json.dumps(self._member_body(member))
        if action is Action.MOVE:
            return {
                "method": "PATCH",
                "path": f"{members}/{member.previous.subscriber_hash}",
                "body": body,
            }
        return {"method": "PUT", "path": f"{members}/{member.hash}", "body": body}

    def _tag_operation(self, audience_id: str, member: Member) -> dict[str, Any]:
        body = tag_changes(member.decision.add_tags, member.decision.remove_tags)
        path = f"/lists/{audience_id}/members/{member.hash}/tags"
        return {"method": "POST", "path": path, "body": json.dumps(body)}

    def _batch_add(
        self, audience_id: str, members: list[Member]
    ) -> tuple[list[Outcome], list[Member]]:
        status = self.new_member_status
        body = [
            {
                "email_address": m.want.email,
                "status": status,
                "merge_fields": dict(m.want.merge_fields),
                "tags": sorted(m.want.tags),
            }
            for m in members
        ]
        result = self.api.batch_subscribe(audience_id, body)
        by_email = {m.want.email.lower(): m for m in members}
        outcomes = [
            Outcome(by_email[new["email_address"].lower()], "added", status=new["status"])
            for new in result.get("new_members", [])
            if new["email_address"].lower() in by_email
        ]
        existing = []
        for error in result.get("errors", []):
            member = by_email.get(str(error.get("email_address", "")).lower())
            if member is None:
                continue
            if error.get("error_code") == "ERROR_CONTACT_EXISTS":
                existing.append(member)
            else:
                outcomes.append(
                    Outcome(member, "failed", reason=str(error.get("error") or "refused"))
                )
        return outcomes, existing

    # -- bookkeeping --------------------------------------------------------------------

    def _report(self, outcome: Outcome) -> str:
        """Count an outcome in the run, and list it when blocked or failed; its email."""
        member = outcome.member
        setattr(self.run, outcome.counted, getattr(self.run, outcome.counted) + 1)
        email = (
            member.wanted.email if member.wanted else (member.state.email if member.state else "")
        )
        if outcome.counted in ("blocked", "failed"):
            first = member.contacts[0] if member.contacts else None
            self._item(
                outcome.counted,
                outcome.reason,
                email=email,
                source=first.source if first else None,
                contact_key=first.contact_key if first else None,
            )
        return str(email)

    def _record(self, audience_id: str, outcome: Outcome) -> None:
        member = outcome.member
        email = self._report(outcome)
        if self.run.dry_run:
            return
        if not _writes_state(outcome):
            if member.wanted is not None:
                self._link_contacts(audience_id, member)  # new contacts of a known member
            return
        state = self._state_for(outcome)
        state.last_error = outcome.reason if outcome.counted == "failed" else None
        if outcome.counted == "failed" and member.wanted is not None and state.status is None:
            state.fingerprint = member.wanted.fingerprint  # remember what was refused
        if outcome.status:
            _set_status(state, outcome.status, email)
        if outcome.counted == "archived":
            state.archived_by_shop = True
            signals.member_archived.send(self.app, audience_id=audience_id, email=email)
        elif outcome.counted in ("added", "updated") and member.wanted is not None:
            if member.decision.action in _CREATES:
                state.sent = True  # only members the shop created are ever archived by it
            state.archived_by_shop = False
            state.fingerprint = member.wanted.fingerprint
            state.tags = ",".join(sorted(member.wanted.tags))
            state.synced_at = utcnow()
            signals.member_upserted.send(
                self.app, audience_id=audience_id, email=email, status=outcome.status
            )
        if member.wanted is not None and outcome.counted != "failed":
            # A person blocked under their old address stays linked to that member.
            keep = member.decision.action is Action.BLOCKED and member.previous is not None
            self._link_contacts(audience_id, member, move=not keep)

    def _prepare_states(self, audience_id: str, outcomes: Sequence[Outcome]) -> None:
        """Upsert the state rows a page's outcomes write, in one statement."""
        wanted = {
            o.member.hash: (o.member.wanted.email if o.member.wanted else "")
            for o in outcomes
            if _writes_state(o) and not _moves(o)
        }
        self._page_states = ledger.member_states(
            self.session, self.models.MemberState, audience_id, wanted
        )

    def _state_for(self, outcome: Outcome) -> Any:
        """The member's state as an ORM object, to change (loaded only now: most
        members of a resync change nothing and are never loaded this way)."""
        member = outcome.member
        State = self.models.MemberState
        if _moves(outcome):
            # The member itself moved: its row follows it to the new address.
            member.state = self.session.get(State, member.previous.id)
            ledger.rekey(self.session, State, member.state, member.hash, member.want.email)
        else:
            member.state = self._page_states[member.hash]
        if member.wanted is not None:
            member.state.email = member.wanted.email
        return member.state

    def _link_contacts(self, audience_id: str, member: Member, *, move: bool = True) -> None:
        """Remember which member each contact is, so an email change can move it.

        With ``move`` off, contacts linked to another member stay linked to it.
        """
        for row in member.contacts:
            link = self.links.get((row.source, row.contact_key))
            if link is None:
                self._new_links.append(
                    {"source": row.source, "contact_key": row.contact_key,
                     "audience_id": audience_id, "subscriber_hash": member.hash,
                     "fingerprint": row.fingerprint}
                )  # fmt: skip
                # One contact, one link, even if a page meets it twice.
                self.links[(row.source, row.contact_key)] = _PendingLink(
                    audience_id, member.hash, row.fingerprint
                )
            elif move and (link.audience_id, link.subscriber_hash, link.fingerprint) != (
                audience_id,
                member.hash,
                row.fingerprint,
            ):
                if isinstance(link, _PendingLink):
                    continue
                self._moved_links.append(
                    {"link_id": link.id, "audience_id": audience_id,
                     "subscriber_hash": member.hash, "fingerprint": row.fingerprint}
                )  # fmt: skip

    def _write_links(self) -> None:
        """The page's new and changed links, in two statements (not one per contact)."""
        ContactState = self.models.ContactState
        if self._new_links:
            self.session.execute(sa.insert(ContactState), self._new_links)
        if self._moved_links:
            self.session.execute(
                sa.update(ContactState.__table__)
                .where(ContactState.__table__.c.id == sa.bindparam("link_id"))
                .values(audience_id=sa.bindparam("audience_id"),
                        subscriber_hash=sa.bindparam("subscriber_hash"),
                        fingerprint=sa.bindparam("fingerprint")),
                self._moved_links,
            )  # fmt: skip
        self._new_links, self._moved_links = [], []

    def _item(self, outcome: str, reason: str, **where: Any) -> None:
        self.session.add(
            self.models.SyncRunItem(run_id=self.run.id, outcome=outcome, reason=reason, **where)
        )

    def _states(
        self, audience_id: str, hashes: Sequence[str], *, editable: bool = False
    ) -> dict[str, Any]:
        """What is known of these members: plain rows (cheap), or ORM objects to edit."""
        State = self.models.MemberState
        columns = [State] if editable else list(State.__table__.c)
        query = sa.select(*columns).where(
            State.audience_id == audience_id, State.subscriber_hash.in_(hashes)
        )
        rows = self.session.execute(query)
        found = rows.scalars() if editable else rows
        return {row.subscriber_hash: row for row in found}

    def _staged(self, audience_id: str, hashes: Sequence[str]) -> dict[str, list[Any]]:
        staged = self.models.StagedContact
        rows = self.session.execute(
            sa.select(*staged.__table__.c)
            .where(
                staged.run_id == self.run.id,
                staged.audience_id == audience_id,
                staged.subscriber_hash.in_(hashes),
            )
            .order_by(staged.id)
        )
        grouped: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            grouped[row.subscriber_hash].append(row)
        return grouped

    def _contact_links(self, staged: dict[str, list[Any]]) -> dict[tuple[str, str], Any]:
        """The page's contacts' links to the members they were last sent as."""
        ContactState = self.models.ContactState
        keys = {row.contact_key for rows in staged.values() for row in rows}
        rows = self.session.execute(
            sa.select(*ContactState.__table__.c).where(ContactState.contact_key.in_(keys))
        )
        return {(link.source, link.contact_key): link for link in rows}

    def _previous_members(
        self, audience_id: str, staged: dict[str, list[Any]]
    ) -> dict[str, tuple[Any, bool]]:
        """For addresses a contact moved to: the member it was last sent as, and whether
        that member may move along (no contact still has its address).

        When contacts of one address come from several members, a member that blocks
        (unsubscribed, cleaned, archived by someone else) is the one that counts.
        """
        moved: dict[str, set[str]] = defaultdict(set)
        for member_hash, rows in staged.items():
            for row in rows:
                link = self.links.get((row.source, row.contact_key))
                if (
                    link is not None
                    and link.audience_id == audience_id
                    and link.subscriber_hash != member_hash
                ):
                    moved[member_hash].add(link.subscriber_hash)
        if not moved:
            return {}
        olds = sorted(set().union(*moved.values()))
        staged_model = self.models.StagedContact
        still_used = set(
            self.session.execute(
                sa.select(staged_model.subscriber_hash).where(
                    staged_model.run_id == self.run.id,
                    staged_model.audience_id == audience_id,
                    staged_model.subscriber_hash.in_(olds),
                )
            ).scalars()
        )
        states = self._states(audience_id, olds)
        previous = {}
        for new, old_hashes in moved.items():
            candidates = [states[old] for old in sorted(old_hashes) if old in states]
            if not candidates:
                continue
            blocking = [state for state in candidates if blocks(_known(state))]
            chosen = (blocking or candidates)[0]
            alone = len(old_hashes) == 1 and chosen.subscriber_hash not in still_used
            previous[new] = (chosen, alone)
        return previous


_ONE_BY_ONE = (Action.UPDATE, Action.MOVE, Action.RESTORE, Action.ARCHIVE)
#: What the shop does that creates a member: only such members may be archived by it.
_CREATES = (Action.ADD, Action.MOVE, Action.RESTORE)


@dataclass(frozen=True)
class _PendingLink:
    """A link written with the page: a second sighting of its contact is not a move."""

    audience_id: str
    subscriber_hash: str
    fingerprint: str


def _writes_state(outcome: Outcome) -> bool:
    """Whether an outcome changes what the ledger holds of its member."""
    member, action = outcome.member, outcome.member.decision.action
    if action is Action.REJECTED:
        return False  # nothing was sent; the record of the refusal stands
    return not (action is Action.UNCHANGED and member.state is not None)


def _moves(outcome: Outcome) -> bool:
    """The member itself moved to the new address (Mailchimp took the change)."""
    return outcome.member.decision.action is Action.MOVE and outcome.counted != "failed"


def _tag_change(member: Member) -> bool:
    return bool(member.decision.add_tags or member.decision.remove_tags)


def _known(state: Any) -> Known | None:
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


def _set_status(state: Any, status: str, email: str) -> None:
    if state.status != status:
        state.status = status
        state.status_changed_at = utcnow()
    state.email = email


def _pages(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    page: list[Any] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page
