"""A Sync (or Preview): the shop's contacts, through the planner, into Mailchimp.

A run marks the outbox rows it covers, stages the contacts (:mod:`.staging`), reads what
Mailchimp changed (:mod:`.pull`), then a page of addresses at a time (:mod:`.select`)
decides, sends and records; departed contacts' archives last. Each page is committed,
so a run killed midway leaves a true record and the next run does what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from .. import signals, words
from .._state import real_app
from ..bulk_gc import app_set_aside
from ..client import MailchimpApi
from ..exceptions import MailchimpSyncError, SyncRefused
from ..merge_fields import missing_note
from ..models import utcnow
from ..sources import default_tag
from . import ledger, locks, pull, retention, staging
from .members import Member, Outcome, as_planned
from .outbox import Outbox
from .pipeline import DEPTH, Pipeline
from .plans import History, departed_member, plan_member
from .recorder import Recorder
from .select import RunSelection
from .sender import Sender
from .staging import Target

if TYPE_CHECKING:
    from ..extension import MailchimpSync

log = logging.getLogger(__name__)

#: Seconds a sync waits for a real-time delivery to release an audience.
LOCK_PATIENCE = 30.0


def targets_for(extension: MailchimpSync, settings: Any, role: str | None) -> list[Target]:
    """The roles a run covers (those with an audience chosen).

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

    def __init__(self, extension: MailchimpSync, run_id: int) -> None:
        self.extension = extension
        self.models = extension.models
        self.session: Any = extension.db.session
        self.config = current_app.config
        self.app = real_app()
        self.run: Any = self.session.get(self.models.SyncRun, run_id)
        if self.run is None:
            raise SyncRefused(f"There is no sync run #{run_id}.")
        self.holder = locks.holder("run", run_id)
        self.lock_names: list[str] = []
        self.merge_tags: dict[str, set[str]] = {}
        self.targets: Sequence[Target] = []
        self.learned: dict[str, set[str]] = {}  # members whose status Mailchimp changed
        self.api: MailchimpApi  # once connected
        self.read_again_left = pull.READ_AGAIN_AT_MOST  # members kept out, read again
        self.snapshot: staging.Snapshot | None = None
        self.selection = RunSelection(self.session, self.models, run_id, ())
        self.recorder = Recorder(
            extension, self.run, {"run_id": run_id}, dry_run=bool(self.run.dry_run)
        )
        self.outbox = Outbox(self.session, self.models)
        self._beat = 0.0
        self._thread = threading.get_ident()

    # -- the run ------------------------------------------------------------------------

    def execute(self, on_progress: Callable[[Any], None] | None = None) -> Any:
        self.on_progress = on_progress or (lambda run: None)
        try:
            with app_set_aside():
                return self._execute()
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

    def _execute(self) -> Any:
        store = self.extension.settings_store()
        settings, api_key = store.get(), store.api_key()
        if settings is None or api_key is None:
            return self._fail("Connect a Mailchimp account first.")
        targets = targets_for(self.extension, settings, self.run.role)
        if self.run.audiences:  # queued for these audiences (one, when runs go side by side)
            targets = [t for t in targets if t.audience_id in self.run.audiences.split(",")]
        if not targets:
            return self._fail(
                "No audience is chosen for any role yet: pick one on the Mailchimp page."
            )
        audience_ids = sorted({t.audience_id for t in targets})
        self.run.audiences = ",".join(audience_ids)
        if not self._take_locks([] if self.run.dry_run else locks.audience_locks(audience_ids)):
            return self._fail("A sync of this audience is already running.")
        self._start()
        api = self.api = MailchimpApi(api_key, self.config, on_retry=self._retrying)
        new_status = "pending" if settings.double_opt_in else "subscribed"
        self.sender = Sender(api, self.config, new_status)
        if not self.run.dry_run:
            self.outbox.claim(self.run.id, {s.name for t in targets for s in t.sources})
        self.targets = targets
        for audience_id in audience_ids:  # its fields first: a gained one resends everyone
            self._phase(f"reading {audience_id}")  # the page names the audience
            self.merge_tags[audience_id] = api.merge_field_tags(audience_id)
        if not self.run.dry_run:
            staging.resend_where_fields_added(
                self.session, self.models, targets, settings.audiences, self.merge_tags
            )
        chosen = {a: [c for c in settings.audiences if c.audience_id == a] for a in audience_ids}
        started = utcnow()  # the next window starts here: what is read early is covered
        since = {a: pull.pull_window(chosen[a]) for a in audience_ids}
        early = {a: pull.read_early(api, a, since[a]) for a in audience_ids}
        self._stage(targets)
        for a in audience_ids:
            self._phase(f"reading {a}")  # the page names the audience
            self._read_mailchimp(api, a, chosen[a], (since[a], started), early[a])
        self.addresses = {a: self.selection.address_count(a) for a in audience_ids}
        self.departed = {a: self.selection.departed_count(a) for a in audience_ids}
        self.run.total = sum(self.addresses.values()) + sum(self.departed.values())
        self._phase("previewing" if self.run.dry_run else "sending")
        for audience_id in audience_ids:
            self._sync_audience(audience_id)
            # None departed when counted, and no contact read again since left one.
            if self.departed[audience_id] or self._snapshot_moved():
                self._archive_departed(audience_id)
        return self._finish(settings, audience_ids)

    def _note(self, note: str | None) -> None:  # something staff should know, in the summary
        if note:
            self.run.notes = f"{self.run.notes}\n{note}" if self.run.notes else note

    def _take_locks(self, names: list[str]) -> bool:
        """Take the audiences' locks, waiting a little for a real-time delivery."""
        ttl = float(self.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"])
        deadline = time.monotonic() + LOCK_PATIENCE
        while not locks.acquire(self.session, self.models.Lock, names, self.holder, ttl):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        self.lock_names = names
        return True

    def _start(self) -> None:
        self.run.state = "running"
        self.run.started_at = utcnow()
        self._phase("preparing")
        signals.sync_started.send(self.app, run=self.run)

    def _phase(self, phase: str) -> None:
        self.run.phase = phase
        self._commit()

    def _retrying(self, delay: float) -> None:
        """Show a retry's wait on the page (from the run's own thread only: the
        session is not shared with the sender's workers)."""
        if threading.get_ident() == self._thread:
            self.run.phase = words.retry_phase(self.run.phase, delay)
            self._commit()

    def _commit(self) -> None:  # then tell the host: signals go out after the commit
        self.session.commit()
        self.recorder.send_signals()
        self.on_progress(self.run)

    def _finish(self, settings: Any, audience_ids: Sequence[str]) -> Any:
        self.run.state = "done"
        self.run.phase = None
        self.run.finished_at = utcnow()
        if not self.run.dry_run:
            self.outbox.delivered_by_run(self.run.id)
            for role_audience in settings.audiences:
                if role_audience.audience_id in audience_ids:
                    role_audience.first_synced_at = role_audience.first_synced_at or utcnow()
        kept = retention.lists_kept(self.config)
        retention.forget_old_lists(self.session, self.models, self.run.store, kept)
        self._commit()
        signals.sync_finished.send(self.app, run=self.run)
        return self.run

    def _fail(self, message: str) -> Any:
        self.run.state = "failed"
        self.run.error = message
        self.run.finished_at = utcnow()
        self.session.commit()
        signals.sync_finished.send(self.app, run=self.run)
        return self.run

    def _cleanup(self) -> None:
        staged = self.models.StagedContact
        self.session.execute(sa.delete(staged).where(staged.run_id == self.run.id))
        self.session.commit()
        if self.lock_names:
            locks.release(self.session, self.models.Lock, self.lock_names, self.holder)

    def _heartbeat(self) -> None:
        """Keep the locks alive (at most every tenth of their lifetime: cheap pages)."""
        ttl = float(self.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"])
        now = time.monotonic()
        if self.lock_names and now - self._beat >= ttl / 10:
            locks.refresh(self.session, self.models.Lock, self.lock_names, self.holder, ttl)
            self._beat = now

    # -- stage and read -----------------------------------------------------------------

    def _stage(self, targets: Sequence[Target]) -> None:
        chunk = int(self.config["MAILCHIMP_SYNC_CHUNK_SIZE"])
        self.session.commit()  # links may be read on another connection: see read_ahead
        self.snapshot = staging.Snapshot(
            self.session, self.models, self.run.id, targets, chunk_size=chunk,
            changed_only=not self.run.full, read_ahead=self.config["MAILCHIMP_SYNC_READ_AHEAD"],
        )  # fmt: skip
        self.selection = RunSelection(self.session, self.models, self.run.id, self.snapshot.sources)
        for skipped in self.snapshot.take():
            self.run.skipped += skipped.outcome == "skipped"  # "trimmed" ones were sent
            contact = skipped.contact
            self.recorder.item(
                skipped.outcome, skipped.reason,
                source=contact.source, contact_key=contact.key, email=contact.email,
            )  # fmt: skip
        self.selection.analyze()
        self.session.commit()

    def _complete(self, audience_id: str, hashes: Iterable[str]) -> None:
        """Stage the unchanged contacts of these addresses (the snapshot left them out)."""
        if self.snapshot is not None and self.snapshot.unchanged:
            hashes = set(hashes)
            contacts = self.selection.current_links(audience_id, hashes)
            if contacts:
                self.snapshot.add_companions(contacts, hashes)

    def _snapshot_moved(self) -> bool:
        """Whether a contact read again during the run had left its member meanwhile."""
        return self.snapshot is not None and self.snapshot.companions_moved

    def _groups(self, audience_id: str, hashes: Sequence[str]) -> dict[str, list[Any]]:
        """Every contact of these addresses, as staged rows."""
        self._complete(audience_id, hashes)
        return self.selection.groups(audience_id, hashes)

    def _read_mailchimp(
        self, api: MailchimpApi, audience_id: str, role_audiences: list[Any],
        window: tuple[datetime | None, datetime], early: dict[str, Any],
    ) -> None:  # fmt: skip
        """The audience's merge tags (cached for deliveries) and its members' changes in
        *window* (the last read to this run's start; *early*: pages read while staging)."""
        tags = self.merge_tags[audience_id]
        name = role_audiences[0].audience_name or audience_id
        self._note(missing_note(name, staging.declared_tags(self.targets, audience_id) - tags))
        since, started = window
        statuses = None if since is None else pull.LEFT
        remote = pull.read_members(api, audience_id, since, statuses, early)
        learned: set[str] = set()
        read = 0
        for page in _pages(remote, 500):
            read += len(page)
            self._phase(f"reading {audience_id} {read}")
            learned |= pull.learn(
                self.extension, audience_id, page,
                lambda hashes: self._groups(audience_id, hashes),
                tags, apply=not self.run.dry_run,
            )  # fmt: skip
        self.learned[audience_id] = learned
        if not self.run.dry_run:
            for role_audience in role_audiences:
                role_audience.pulled_at = started
                role_audience.merge_tags = ",".join(sorted(tags))
        self.session.commit()

    # -- plan, send, record -------------------------------------------------------------

    def _sync_audience(self, audience_id: str) -> None:
        """Every address with a contact changed since it was last handled (all with
        ``full``), 500 at a time; the rest are counted unchanged."""
        everyone = self.addresses[audience_id]
        also = (
            self.learned.get(audience_id, set())
            | self.selection.left(audience_id)
            | self.outbox.departed(self.run.id, audience_id)
        )
        refused = {} if self.run.full else self.selection.still_refused(audience_id, also)
        self._complete(audience_id, also)
        handled = declined = 0
        pages = self.selection.pages(audience_id, changed_only=not self.run.full, also=also)
        with self._pipeline(audience_id) as pipeline:
            for hashes in pages:
                handled += len(hashes)
                for planned in refused.keys() & set(hashes):
                    del refused[planned]  # its contact changed: planned like any other
                page = self._plan(audience_id, hashes)
                if page.moves and pipeline.busy:
                    # Moves read members other pages may be changing: those go first.
                    pipeline.flush()
                    page = self._plan(audience_id, hashes)
                declined += sum(1 for m in page.members if not any(c.marketing for c in m.contacts))
                pipeline.submit(page)
        if not self.run.dry_run:
            self.selection.forget_links_of_deleted(audience_id, self.extension.sources)
        quiet = self.selection.without_consent_count(audience_id) - declined  # not handled
        self.run.not_opted_in += quiet
        self.recorder.list_refused(refused.values())
        self.run.unchanged += everyone - handled - quiet - len(refused)
        self.run.processed += everyone - handled
        self._commit()

    def _plan(self, audience_id: str, hashes: list[str]) -> Page:
        groups = self._groups(audience_id, hashes)
        states = self._states(audience_id, groups, hashes)
        links = ledger.Links(self.session, self.models.ContactState)
        links.load((row.source, row.contact_key) for rows in groups.values() for row in rows)
        moved = ledger.moved_contacts(links.by_contact, audience_id, groups)
        olds = set().union(*moved.values()) if moved else set()
        self._complete(audience_id, olds)
        old_states = ledger.states_read(self.session, self.models.MemberState, audience_id, olds)
        history = History(
            ledger.previous_members(moved, old_states, self.selection.in_use(audience_id, olds)),
            ledger.refused_contacts(links.by_contact, audience_id, groups, old_states),
        )
        members = [
            plan_member(member_hash, groups[member_hash], states.get(member_hash), history,
                        self.merge_tags[audience_id], full=bool(self.run.full))
            for member_hash in hashes
        ]  # fmt: skip
        return Page(members, links, moves=bool(moved))

    def _states(
        self, audience_id: str, groups: dict[str, list[Any]], hashes: list[str]
    ) -> dict[str, Any]:
        """What is known of these members; those about to be reported kept out are read
        again first (they may have come back: later reads take only members who left),
        up to :data:`.pull.READ_AGAIN_AT_MOST` a run. A Preview reads none: what it
        read would be known, and news it found (an unsubscribe) not applied."""
        State = self.models.MemberState
        states = ledger.states_read(self.session, State, audience_id, hashes)
        if self.run.dry_run:
            return states
        stale = sorted(pull.kept_out(states, groups))[: self.read_again_left]
        if not stale:
            return states
        self.read_again_left -= len(stale)
        pull.read_again(self.extension, self.api, audience_id, stale, must=False)
        return ledger.states_read(self.session, State, audience_id, hashes)

    def _archive_departed(self, audience_id: str) -> None:
        """Members the shop created whose contacts are gone from the shop."""
        last_id = 0
        with self._pipeline(audience_id) as pipeline:
            while states := self.selection.departed(audience_id, last_id):
                last_id = states[-1].id
                members = [departed_member(state) for state in states]
                pipeline.submit(Page(members, ledger.Links(self.session, self.models.ContactState)))

    def _pipeline(self, audience_id: str) -> Pipeline[Page]:
        """Pages sent in the background (a preview sends nothing), recorded in order.

        The sending threads touch no ORM object: the run's attributes expire at each
        commit, and loading them again needs the session and app context of this thread.
        """
        dry_run = bool(self.run.dry_run)

        def send(page: Page) -> list[Outcome]:
            if dry_run:
                return [as_planned(m) for m in page.members]
            return self.sender.send(audience_id, page.members)

        def record(page: Page, outcomes: list[Outcome]) -> None:
            self.recorder.record(audience_id, outcomes, page.links)
            self.run.processed += len(page.members)
            self._heartbeat()
            self._commit()

        return Pipeline(send, record, depth=1 if dry_run else DEPTH)


@dataclass
class Page:
    """A page of planned members, with the links of their contacts (read to plan them,
    written when they are recorded); *moves*: some contact changed its address."""

    members: list[Member]
    links: ledger.Links
    moves: bool = False


def _pages(items: Any, size: int) -> Any:
    page: list[Any] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page
