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

from . import bounds, emails, locks, signals, staging, webhooks
from .client import MailchimpApi, is_transient, tag_changes
from .connection import default_tag
from .exceptions import MailchimpApiError, MailchimpSyncError
from .extension import real_app
from .models import DEFAULT_STORE, as_utc, utcnow
from .planner import ACTIVE, Action, Decision, Known, Wanted, blocked_by, decide
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
    moved_from: Any = None  # MemberState row of the address a contact was last sent as
    decision: Decision = field(default_factory=lambda: Decision(Action.UNCHANGED))

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

    def _mark_outbox_delivered(self) -> None:
        """Changes made before this full sync read the shop are in it: delivered."""
        Outbox = self.models.Outbox
        self.session.execute(
            sa.update(Outbox)
            .where(Outbox.delivered_at.is_(None), Outbox.created_at < self.run.started_at)
            .values(delivered_at=utcnow())
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

        The changed contacts, plus every contact sharing an address with them or with
        the members they were last sent as: a member's tags and consent come from all
        the contacts that make it up.
        """
        assert self.contacts is not None
        sources = {s.name: s for t in targets for s in t.sources}
        found: dict[str, dict[str, Any]] = defaultdict(dict)
        addresses: set[str] = set()
        for source_name, key in self.contacts:
            source = sources.get(source_name)
            contact = source.get_contact(self.session, key) if source else None
            if contact is not None:
                found[source_name][contact.key] = contact
                addresses.add((emails.normalize(contact.email) or "").lower())
        previous = self._linked_members(self.contacts)
        self.scope = {state.subscriber_hash for state in previous}
        addresses |= {state.email.lower() for state in previous}
        for source in sources.values():
            for address in addresses - {""}:
                for contact in source.contacts_with_email(self.session, address):
                    found[source.name].setdefault(contact.key, contact)
        self.scope |= {emails.subscriber_hash(a) for a in addresses - {""}}
        return {name: list(contacts.values()) for name, contacts in found.items()}

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
        hashes = [emails.subscriber_hash(m["email_address"]) for m in remote]
        states = self._states(audience_id, hashes, editable=True)
        staged = self._staged(audience_id, hashes)
        for member, member_hash in zip(remote, hashes, strict=True):
            state = states.get(member_hash)
            if state is None:
                state = self.models.MemberState(
                    audience_id=audience_id,
                    subscriber_hash=member_hash,
                    email=member["email_address"],
                    sent=False,
                    tags="",
                )
                self.session.add(state)
            status, email = member["status"], member["email_address"]
            if state.status != status:
                self.learned[audience_id].add(member_hash)
            if (
                status in ("unsubscribed", "cleaned")
                and state.status != status
                and not self.run.dry_run
            ):
                webhooks.withdraw(self.extension, audience_id, email, status)  # reconcile
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
            state.fingerprint = wanted.fingerprint
            state.tags = ",".join(sorted(wanted.tags))
            state.sent = wanted.consent

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
        staged, link = self.models.StagedContact, self.models.ContactState
        here = sa.select(staged.id).where(
            staged.run_id == self.run.id,
            staged.source == link.source,
            staged.contact_key == link.contact_key,
        )
        self.session.execute(
            sa.delete(link).where(link.audience_id == audience_id, ~sa.exists(here))
        )

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
        moves = self._previous_members(audience_id, staged)
        members = []
        for member_hash in hashes:
            contacts = staged[member_hash]
            wanted = staging.wanted_member(contacts, self.merge_tags[audience_id])
            state = states.get(member_hash)
            member = Member(
                member_hash, wanted, _known(state), state, contacts, moves.get(member_hash)
            )
            member.decision = decide(
                wanted,
                member.known,
                moved_from=_known(member.moved_from),
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
        for outcome in outcomes:
            self._record(audience_id, outcome)
        self._write_links()
        self.run.processed += len(members)
        if not self.run.dry_run:
            self._heartbeat()
        self.session.commit()
        self.on_progress(self.run)

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
                reply = self.api.change_member(audience_id, member.moved_from.subscriber_hash, body)
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
                "path": f"{members}/{member.moved_from.subscriber_hash}",
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

    def _record(self, audience_id: str, outcome: Outcome) -> None:
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
        if self.run.dry_run:
            return
        if member.decision.action is Action.REJECTED:
            return  # nothing was sent; the record of the refusal stands
        if member.decision.action is Action.UNCHANGED and member.state is not None:
            if member.wanted is not None:
                self._link_contacts(audience_id, member)
            return  # the usual case of a resync: nothing to write but new links
        state = self._state_for(audience_id, member)
        state.last_error = outcome.reason if outcome.counted == "failed" else None
        if outcome.counted == "failed" and member.wanted is not None and state.status is None:
            state.fingerprint = member.wanted.fingerprint  # remember what was refused
        if outcome.status:
            _set_status(state, outcome.status, email)
        if outcome.counted == "archived":
            state.archived_by_shop = True
            signals.member_archived.send(self.app, audience_id=audience_id, email=email)
        elif outcome.counted in ("added", "updated") and member.wanted is not None:
            state.sent = True
            state.archived_by_shop = False
            state.fingerprint = member.wanted.fingerprint
            state.tags = ",".join(sorted(member.wanted.tags))
            state.synced_at = utcnow()
            signals.member_upserted.send(
                self.app, audience_id=audience_id, email=email, status=outcome.status
            )
        if member.wanted is not None and outcome.counted != "failed":
            self._link_contacts(audience_id, member)

    def _state_for(self, audience_id: str, member: Member) -> Any:
        """The member's state as an ORM object, to change (loaded only now: most
        members of a resync change nothing and are never loaded this way)."""
        State = self.models.MemberState
        if member.decision.action is Action.MOVE and member.moved_from is not None:
            # The member itself moved: its row follows it to the new address.
            member.state = self.session.get(State, member.moved_from.id)
            member.state.subscriber_hash = member.hash
        elif member.state is not None and not isinstance(member.state, State):
            member.state = self.session.get(State, member.state.id)
        if member.state is None:
            member.state = self.models.MemberState(
                audience_id=audience_id,
                subscriber_hash=member.hash,
                sent=False,
                tags="",
                email=member.wanted.email if member.wanted else "",
            )
            self.session.add(member.state)
        if member.wanted is not None:
            member.state.email = member.wanted.email
        return member.state

    def _link_contacts(self, audience_id: str, member: Member) -> None:
        """Remember which member each contact is, so an email change can move it."""
        for row in member.contacts:
            link = self.links.get((row.source, row.contact_key))
            if link is None:
                self._new_links.append(
                    {"source": row.source, "contact_key": row.contact_key,
                     "audience_id": audience_id, "subscriber_hash": member.hash,
                     "fingerprint": row.fingerprint}
                )  # fmt: skip
            elif (link.audience_id, link.subscriber_hash, link.fingerprint) != (
                audience_id,
                member.hash,
                row.fingerprint,
            ):
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
        # A skipped contact's values are what made it fail: shown, so shortened to fit.
        Item = self.models.SyncRunItem
        shown = bounds.fitted(Item, {"reason": reason, **where})
        self.session.add(Item(run_id=self.run.id, outcome=outcome, **shown))

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

    def _previous_members(self, audience_id: str, staged: dict[str, list[Any]]) -> dict[str, Any]:
        """For addresses new to the audience: the member a contact was last sent as."""
        moved = {
            (link.audience_id, link.subscriber_hash): member_hash
            for member_hash, rows in staged.items()
            for row in rows
            if (link := self.links.get((row.source, row.contact_key))) is not None
            and link.audience_id == audience_id
            and link.subscriber_hash != member_hash
        }
        if not moved:
            return {}
        # An old address another contact still has stays where it is: no move then.
        staged_model = self.models.StagedContact
        still_used = set(
            self.session.execute(
                sa.select(staged_model.subscriber_hash).where(
                    staged_model.run_id == self.run.id,
                    staged_model.audience_id == audience_id,
                    staged_model.subscriber_hash.in_([old for _, old in moved]),
                )
            ).scalars()
        )
        states = self._states(audience_id, [old for _, old in moved])
        return {
            new: states[old]
            for (_, old), new in moved.items()
            if old in states and old not in still_used
        }


_ONE_BY_ONE = (Action.UPDATE, Action.MOVE, Action.RESTORE, Action.ARCHIVE)


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
