"""Real-time delivery: the changed contacts, straight to Mailchimp, and nothing else.

A delivery reads no member list: the ledger already knows each member's state (every
Sync reads Mailchimp's changes, and webhooks keep it current), and the audience's merge
tags come from the cache the last Sync filled (read again only when Mailchimp refuses a
field). So an isolated flag flip costs one write request; a burst of changes goes
through the same sender as a sync, in batches. Deliveries start only after the staff's
first Sync of an audience; until then changes wait, and that Sync covers them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from .. import emails, signals
from .._state import real_app
from ..client import MailchimpApi
from ..exceptions import MailchimpSyncError
from ..models import utcnow
from . import ledger, locks, pull, staging
from .members import Member, Outcome
from .outbox import Outbox
from .planner import ACTIVE, Action
from .plans import History, departed_member, plan_member
from .recorder import Recorder
from .runner import targets_for
from .select import PAGE
from .sender import Sender
from .staging import Target

if TYPE_CHECKING:
    from ..extension import MailchimpSync

log = logging.getLogger(__name__)

#: A delivery sends at most this many changes to existing members one by one; a
#: larger burst goes as one batch operation (one write request, however many).
BURST = 2
#: Seconds a delivery waits for another to finish (deliveries take a second or so;
#: the changes that came meanwhile then go together).
DELIVERY_PATIENCE = 10.0
LOCK_POLL = 0.05


@dataclass
class DrainResult:
    delivered: int = 0
    waiting: int = 0
    error: str | None = None
    #: Seconds until the next attempt, when something is waiting for a retry.
    retry_in: float | None = None


def drain(extension: MailchimpSync, *, due_only: bool = True) -> DrainResult:
    """Deliver what the outbox holds for audiences already synced (needs the app context).

    :param due_only: leave changes whose retry is not due yet (``False``: try them all
        now, as ``flask mailchimp drain`` does).
    """
    session, config = extension.db.session, current_app.config
    outbox = Outbox(session, extension.models)
    settings = extension.settings_store().get()
    if settings is None or not settings.is_connected or not settings.realtime:
        return DrainResult(waiting=outbox.waiting())  # the next sync takes them
    outbox.prune(float(config["MAILCHIMP_SYNC_OUTBOX_RETENTION"]))
    _prune_deliveries(extension, float(config["MAILCHIMP_SYNC_OUTBOX_RETENTION"]))
    session.commit()
    targets = [
        t for t in targets_for(extension, settings, None) if t.audience_id in _live(settings)
    ]
    sources = {s.name for t in targets for s in t.sources}
    if not outbox.due(sources, due_only=due_only):
        return DrainResult(waiting=outbox.waiting(), retry_in=outbox.next_retry_in())
    names = locks.audience_locks(t.audience_id for t in targets)
    holder = locks.holder("delivery", uuid.uuid4().hex[:12])
    if not _lock(extension, names, holder):
        rows = outbox.due(sources, due_only=due_only)
        return _postpone(extension, rows, "Waiting for a sync to finish.", attempt=False)
    try:
        # Read under the lock: a delivery that held it meanwhile took what it read.
        rows = outbox.due(sources, due_only=due_only)
        error = _deliver(extension, settings, targets, rows) if rows else None
    finally:
        locks.release(session, extension.models.Lock, names, holder)
    if error is not None:
        return _postpone(extension, rows, error, attempt=True)
    return DrainResult(
        delivered=len(rows), waiting=outbox.waiting(), retry_in=outbox.next_retry_in()
    )


def _lock(extension: MailchimpSync, names: list[str], holder: str) -> bool:
    """Take the audiences' locks, waiting for another delivery (never for a sync)."""
    session, Lock = extension.db.session, extension.models.Lock
    ttl = float(current_app.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"])
    deadline = time.monotonic() + DELIVERY_PATIENCE
    while not locks.acquire(session, Lock, names, holder, ttl):
        if locks.held(session, Lock, names, except_deliveries=True):
            return False  # a sync: it covers these changes, or the next delivery does
        if time.monotonic() > deadline:
            return False
        time.sleep(LOCK_POLL)
    return True


def _live(settings: Any) -> set[str]:
    """The audiences whose first Sync is done: real-time deliveries go only there."""
    return {a.audience_id for a in settings.audiences if a.first_synced_at is not None}


def _deliver(
    extension: MailchimpSync, settings: Any, targets: list[Target], rows: list[Any]
) -> str | None:
    """One delivery of *rows*; ``None`` when done, else why it failed (rolled back)."""
    session = extension.db.session
    record = extension.models.Delivery(changes=len(rows))
    session.add(record)
    session.commit()
    try:
        delivery = Delivery(extension, settings, record)
        delivery.deliver(targets, rows)
        Outbox(session, extension.models).delivered(rows)
        record.state, record.finished_at = "done", utcnow()
        session.commit()
        delivery.recorder.send_signals()
        return None
    except MailchimpSyncError as problem:
        error = str(problem)
    except Exception as problem:
        log.exception("A real-time delivery to Mailchimp failed")
        error = f"The delivery stopped on an unexpected error ({type(problem).__name__})."
    session.rollback()
    record.state, record.error, record.finished_at = "failed", error, utcnow()
    session.commit()
    return error


def _postpone(
    extension: MailchimpSync, rows: list[Any], error: str, *, attempt: bool
) -> DrainResult:
    session = extension.db.session
    outbox = Outbox(session, extension.models)
    base = float(current_app.config["MAILCHIMP_SYNC_RETRY_BACKOFF"])
    retry_in = outbox.postpone(rows, error, base, attempt=attempt)
    session.commit()
    waiting = outbox.waiting()
    if attempt:
        signals.delivery_failed.send(real_app(), error=error, pending=waiting)
    return DrainResult(waiting=waiting, error=error, retry_in=retry_in)


def _addresses(found: dict[str, dict[str, Any]]) -> set[str]:
    """The members (hashes) the contacts' addresses are now."""
    return {
        emails.subscriber_hash(contact.email)
        for contacts in found.values()
        for contact in contacts.values()
        if emails.identity(contact.email)
    }


def _prune_deliveries(extension: MailchimpSync, days: float) -> None:

    Delivery_ = extension.models.Delivery
    cutoff = utcnow() - timedelta(days=days)
    Item = extension.models.SyncRunItem
    old = sa.select(Delivery_.id).where(Delivery_.started_at < cutoff)
    extension.db.session.execute(sa.delete(Item).where(Item.delivery_id.in_(old)))
    extension.db.session.execute(sa.delete(Delivery_).where(Delivery_.started_at < cutoff))


class Delivery:
    """Sends the changed contacts (and every contact of the same members)."""

    def __init__(self, extension: MailchimpSync, settings: Any, record: Any) -> None:
        self.extension = extension
        self.settings = settings
        self.session = extension.db.session
        self.models = extension.models
        config = current_app.config
        self.api = MailchimpApi(extension.settings_store().api_key() or "", config)
        new_status = "pending" if settings.double_opt_in else "subscribed"
        self.sender = Sender(self.api, config, new_status, batch_threshold=BURST)
        self.recorder = Recorder(extension, record, {"delivery_id": record.id})

    def deliver(self, targets: Sequence[Target], rows: Sequence[Any]) -> None:
        """Deliver the changes of these outbox rows."""
        changed = sorted({(row.source, row.contact_key) for row in rows})
        # Deleted contacts: the members they were last sent as (their links are gone).
        departed = {row.subscriber_hash for row in rows if row.subscriber_hash}
        contacts, scope = self._affected(targets, changed, departed)
        for audience_id in sorted({t.audience_id for t in targets}):
            here = [t for t in targets if t.audience_id == audience_id]
            groups = self._groups(here, contacts)
            self._deliver_audience(audience_id, groups, scope)

    def _affected(
        self, targets: Sequence[Target], changed: Sequence[tuple[str, str]], departed: set[str]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The changed contacts, plus every contact last sent as the same member as they
        are now or were last sent as (found through the stored links, so another
        spelling of the address is found too); and the members (hashes) concerned.

        A contact found through its link may be at another address now, which is then
        decided too: that address's contacts are found as well, and so on. Decided from
        one contact without the flag, it would archive a member another one consents to.
        """
        sources = {s.name: s for t in targets for s in t.sources}
        found: dict[str, dict[str, Any]] = {name: {} for name in sources}
        hashes: set[str] = set(departed)
        for name, key in changed:
            contact = self._contact(sources, name, key)
            if contact is not None:
                found[name][contact.key] = contact
        Link = self.models.ContactState
        keys = {key for _, key in changed}
        for link in self.session.query(Link).filter(Link.contact_key.in_(keys)):
            if (link.source, link.contact_key) in set(changed):
                hashes.add(link.subscriber_hash)
        audience_ids = {t.audience_id for t in targets}
        hashes |= _addresses(found)
        looked: set[str] = set()
        while new := hashes - looked:
            looked |= new
            for audience_id in audience_ids:
                for name, key in ledger.linked_contacts(self.session, Link, audience_id, new):
                    if name in found and key not in found[name]:
                        contact = self._contact(sources, name, key)
                        if contact is not None:
                            found[name][contact.key] = contact
            hashes |= _addresses(found)
        return found, hashes

    def _contact(self, sources: dict[str, Any], name: str, key: str) -> Any:
        source = sources.get(name)
        return source.get_contact(self.session, key) if source is not None else None

    def _groups(
        self, targets: Iterable[Target], contacts: dict[str, dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """The contacts as staged rows, by address (skipped ones are listed)."""
        groups: dict[str, list[Any]] = {}
        for target in targets:
            for source in target.sources:
                for contact in contacts.get(source.name, {}).values():
                    values, problem = staging.checked_row(
                        self.models.StagedContact, 0, target, contact
                    )
                    if problem is not None:
                        if contact.marketing:
                            self._skipped(contact, problem)
                        continue
                    if contact.marketing:
                        for note in contact.notes:
                            self.recorder.item(
                                "trimmed",
                                note,
                                source=contact.source,
                                contact_key=contact.key,
                                email=contact.email,
                            )
                    row = SimpleNamespace(**values)
                    groups.setdefault(row.subscriber_hash, []).append(row)
        return groups

    def _skipped(self, contact: Any, reason: str) -> None:
        self.recorder.report.skipped += 1
        self.recorder.item(
            "skipped", reason, source=contact.source, contact_key=contact.key, email=contact.email
        )

    def _deliver_audience(
        self, audience_id: str, groups: dict[str, list[Any]], scope: set[str]
    ) -> None:
        links = self.recorder.links
        links.load((row.source, row.contact_key) for rows in groups.values() for row in rows)
        moved = ledger.moved_contacts(links.by_contact, audience_id, groups)
        olds = set().union(*moved.values()) if moved else set()
        states, old_states = self._states(audience_id, groups, scope, olds)
        history = History(
            ledger.previous_members(moved, old_states, olds & set(groups)),
            ledger.refused_contacts(links.by_contact, audience_id, groups, old_states),
        )
        tags = self._merge_tags(audience_id)
        members = [plan_member(h, rows, states.get(h), history, tags) for h, rows in groups.items()]
        # Members none of whose contacts is left, but for those about to move along.
        moving = {m.previous.subscriber_hash for m in members if m.decision.action is Action.MOVE}
        members += [
            departed_member(state)
            for h, state in states.items()
            if h in scope - set(groups) - moving and state.sent and state.status in ACTIVE
        ]
        for start in range(0, len(members), PAGE):
            page = members[start : start + PAGE]
            outcomes = self.sender.send(audience_id, page)
            outcomes = self._retry_refused_fields(audience_id, outcomes, groups, states, history)
            self.recorder.record(audience_id, outcomes)
        # A move that became an update (its new address was a member already) left the
        # old member without contacts.
        left = [
            departed_member(m.previous)
            for m in members
            if m.previous is not None and m.previous.subscriber_hash in moving
            and m.decision.action is Action.UPDATE and m.previous.subscriber_hash not in groups
            and m.previous.sent and m.previous.status in ACTIVE
        ]  # fmt: skip
        if left:
            self.recorder.record(audience_id, self.sender.send(audience_id, left))

    def _states(
        self, audience_id: str, groups: dict[str, list[Any]], scope: set[str], olds: set[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What is known of the members to decide on, and of those contacts moved away
        from, read again from Mailchimp where the ledger's status may be old.

        Consent follows the person: whether they unsubscribed or bounced since decides
        what their new address may get, and no member lists are read between Syncs. So
        the members contacts moved away from are read first (none for a flag flip);
        then those about to be reported kept out, who may have come back."""
        State = self.models.MemberState
        pull.read_again(self.extension, self.api, audience_id, olds)
        states = ledger.states_read(self.session, State, audience_id, scope | set(groups))
        if stale := pull.kept_out(states, groups):
            pull.read_again(self.extension, self.api, audience_id, stale, must=False)
            states = ledger.states_read(self.session, State, audience_id, scope | set(groups))
        return states, ledger.states_read(self.session, State, audience_id, olds)

    def _merge_tags(self, audience_id: str, *, fresh: bool = False) -> set[str]:
        """The audience's merge tags, from the last Sync's cache (read when missing)."""
        role_audiences = [a for a in self.settings.audiences if a.audience_id == audience_id]
        cached = role_audiences[0].merge_tags if role_audiences else None
        if cached is not None and not fresh:
            return {tag for tag in cached.split(",") if tag}
        tags = self.api.merge_field_tags(audience_id)
        for role_audience in role_audiences:
            role_audience.merge_tags = ",".join(sorted(tags))
        return tags

    def _retry_refused_fields(
        self,
        audience_id: str,
        outcomes: list[Outcome],
        groups: dict[str, list[Any]],
        states: dict[str, Any],
        history: History,
    ) -> list[Outcome]:
        """Mailchimp refused a merge field (edited since the last Sync): read the tags
        again and send those members once more."""
        refused = [
            o for o in outcomes if o.counted == "failed" and "merge field" in o.reason.lower()
        ]
        if not refused:
            return outcomes
        tags = self._merge_tags(audience_id, fresh=True)
        again: list[Member] = [
            plan_member(o.member.hash, groups[o.member.hash], states.get(o.member.hash),
                        history, tags)
            for o in refused if o.member.hash in groups
        ]  # fmt: skip
        kept = [o for o in outcomes if o not in refused]
        return kept + self.sender.send(audience_id, again)
