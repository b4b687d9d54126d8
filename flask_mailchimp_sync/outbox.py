"""Real time: the host's changes to contacts, captured in its own transaction.

Session hooks (attached in ``init_app``, only for the host's ``db``) note every change
to a registered contact — or to the related row its flag lives on — as an outbox row,
written by the same flush, so it commits or rolls back with the host's change. After a
commit the dispatcher is nudged (no network call in the request); a drain then delivers
the outbox: each changed contact, with everyone sharing its address, goes through the
same planner and sender as a sync, in batches. A failed delivery stays in the outbox
and is retried with backoff; a full sync covers whatever is still waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy import event, orm

from . import bounds, locks, signals
from .client import backoff_delay
from .extension import real_app
from .models import as_utc, utcnow
from .sources import Watch

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

#: Session.info keys: the transaction wrote outbox rows; the change came from Mailchimp.
WROTE_OUTBOX = "mailchimp_sync.outbox"
FROM_MAILCHIMP = "mailchimp_sync.from_mailchimp"
#: Changes one drain takes at most; the rest wait for the next.
DRAIN_BATCH = 5000


def attach(extension: MailchimpSync) -> None:
    """Listen to the host's sessions. Idempotent per extension."""
    if getattr(extension, "_outbox_attached", False):
        return
    extension._outbox_attached = True  # type: ignore[attr-defined]
    target = extension.db.session
    event.listen(target, "after_flush", lambda s, _ctx: _after_flush(extension, s))
    event.listen(target, "after_commit", lambda s: _after_commit(extension, s))
    event.listen(target, "after_rollback", _forget)


def _ours(extension: MailchimpSync, session: orm.Session) -> bool:
    # The listener sits on Flask-SQLAlchemy's Session class, shared by every db in the
    # process: act only for our db, inside an app that registered this extension.
    if getattr(session, "_db", None) is not extension.db or not has_app_context():
        return False
    state = current_app.extensions.get("mailchimp_sync")
    return state is not None and state.extension is extension


def _after_flush(extension: MailchimpSync, session: orm.Session) -> None:
    if session.info.get(FROM_MAILCHIMP) or not _ours(extension, session):
        return
    watches = extension.watches_by_model()
    if not watches:
        return
    changed: set[tuple[str, str]] = set()
    for instance, deleted in _touched(session):
        for watch in watches.get(type(instance), ()):
            if deleted or instance in session.new or watch.concerned(instance):
                key = watch.contact_key(instance)
                # A key too long to store would fail the host's commit; every sync
                # reports that contact as skipped instead.
                if key is not None and bounds.fits(extension.models.Outbox, "contact_key", key):
                    changed.add((watch.source.name, key))
    if changed:
        rows = [{"source": name, "contact_key": key, "created_at": utcnow(), "attempts": 0}
                for name, key in sorted(changed)]  # fmt: skip
        session.execute(sa.insert(extension.models.Outbox), rows)
        session.info[WROTE_OUTBOX] = True


def _touched(session: orm.Session) -> Iterable[tuple[Any, bool]]:
    for instance in session.new:
        yield instance, False
    for instance in session.dirty:
        yield instance, False
    for instance in session.deleted:
        yield instance, True


def _forget(session: orm.Session) -> None:
    session.info.pop(WROTE_OUTBOX, None)
    session.info.pop(FROM_MAILCHIMP, None)


def _after_commit(extension: MailchimpSync, session: orm.Session) -> None:
    session.info.pop(FROM_MAILCHIMP, None)  # marks one transaction, never the next
    if session.info.pop(WROTE_OUTBOX, False) and _ours(extension, session):
        from .jobs import dispatcher

        # Never let a nudge break the host's commit: the outbox row is already safe.
        try:
            dispatcher(real_app()).nudge()
        except Exception:  # pragma: no cover - defensive
            log.exception("Could not schedule delivery of Mailchimp changes")


@dataclass
class DrainResult:
    delivered: int = 0
    waiting: int = 0
    error: str | None = None
    #: Seconds until the next attempt, when something is waiting for a retry.
    retry_in: float | None = None


def drain(extension: MailchimpSync, *, due_only: bool = True) -> DrainResult:
    """Deliver what the outbox holds (needs the app context).

    :param due_only: leave changes whose retry is not due yet (``False``: try them all
        now, as ``flask mailchimp drain`` does).
    """
    from .jobs import start_sync
    from .sync import SyncRefused, SyncRunner

    session = extension.db.session
    Outbox = extension.models.Outbox
    settings = extension.settings_store().get()
    if settings is None or not settings.is_connected or not settings.realtime:
        return DrainResult(waiting=_waiting(extension))  # the next sync takes them
    prune(extension)
    query = sa.select(Outbox).where(Outbox.delivered_at.is_(None))
    if due_only:
        now = utcnow()
        query = query.where(sa.or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now))
    rows = list(session.execute(query.order_by(Outbox.id).limit(DRAIN_BATCH)).scalars())
    if not rows:
        return DrainResult(waiting=_waiting(extension), retry_in=_next_retry_in(extension))
    contacts = sorted({(row.source, row.contact_key) for row in rows})
    audiences = locks.audience_locks(a.audience_id for a in settings.audiences)
    if locks.held(session, extension.models.Lock, audiences):  # a sync or another delivery
        return _postpone(extension, rows, "Waiting for a sync to finish.", attempt=False)
    try:
        run = start_sync(extension, trigger="realtime", enqueue=False)
    except SyncRefused as refused:  # no audience chosen, or a sync is running now
        return _postpone(extension, rows, str(refused), attempt=False)
    run = SyncRunner(extension, run.id, contacts=contacts).execute()
    if run.state != "done":
        return _postpone(extension, rows, run.error or "The delivery failed.", attempt=True)
    for row in rows:
        row.delivered_at = utcnow()
        row.last_error = None
    session.commit()
    return DrainResult(
        delivered=len(rows), waiting=_waiting(extension), retry_in=_next_retry_in(extension)
    )


def _postpone(
    extension: MailchimpSync, rows: list[Any], error: str, *, attempt: bool
) -> DrainResult:
    session = extension.db.session
    session.rollback()
    base = float(current_app.config["MAILCHIMP_SYNC_RETRY_BACKOFF"])
    delays = []
    for row in rows:
        if attempt:
            row.attempts += 1
        # Retried with backoff: seconds at first, at most an hour apart.
        delay = max(
            1.0,
            min(3600.0, 2.0 ** min(row.attempts, 12) * base + backoff_delay(row.attempts, base)),
        )
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        row.last_error = error
        delays.append(delay)
    session.commit()
    waiting = _waiting(extension)
    if attempt:
        signals.delivery_failed.send(real_app(), error=error, pending=waiting)
    return DrainResult(waiting=waiting, error=error, retry_in=min(delays))


def _waiting(extension: MailchimpSync) -> int:
    Outbox = extension.models.Outbox
    query = sa.select(sa.func.count()).where(Outbox.delivered_at.is_(None))
    return int(extension.db.session.execute(query).scalar() or 0)


def _next_retry_in(extension: MailchimpSync) -> float | None:
    Outbox = extension.models.Outbox
    query = sa.select(sa.func.min(Outbox.next_attempt_at)).where(Outbox.delivered_at.is_(None))
    soonest = extension.db.session.execute(query).scalar()
    if soonest is None:
        return None
    return max(0.0, (as_utc(soonest) - utcnow()).total_seconds())


def prune(extension: MailchimpSync) -> None:
    """Forget delivered changes older than the retention period."""
    Outbox = extension.models.Outbox
    days = float(current_app.config["MAILCHIMP_SYNC_OUTBOX_RETENTION"])
    cutoff = utcnow() - timedelta(days=days)
    extension.db.session.execute(
        sa.delete(Outbox).where(Outbox.delivered_at.is_not(None), Outbox.delivered_at < cutoff)
    )
    extension.db.session.commit()


def outbox_summary(extension: MailchimpSync) -> dict[str, Any]:
    """What the Mailchimp page shows: waiting, retrying, failed repeatedly, last error."""
    Outbox = extension.models.Outbox
    failing = int(current_app.config["MAILCHIMP_SYNC_OUTBOX_FAILED_AFTER"])
    waiting = Outbox.delivered_at.is_(None)
    count = sa.func.count()
    session = extension.db.session
    last_error = session.execute(
        sa.select(Outbox.last_error).where(waiting, Outbox.last_error.is_not(None))
        .order_by(Outbox.id.desc()).limit(1)
    ).scalar()  # fmt: skip
    return {
        "pending": session.execute(sa.select(count).where(waiting, Outbox.attempts == 0)).scalar(),
        "retrying": session.execute(
            sa.select(count).where(waiting, Outbox.attempts > 0, Outbox.attempts < failing)
        ).scalar(),
        "failed": session.execute(
            sa.select(count).where(waiting, Outbox.attempts >= failing)
        ).scalar(),
        "last_error": last_error,
    }


def watches_by_model(extension: MailchimpSync) -> dict[type, list[Watch]]:
    """Which host models to watch, and for which sources (a model may serve several)."""
    found: dict[type, list[Watch]] = {}
    for source in extension.sources:
        for watch in source.watches():
            found.setdefault(watch.model, []).append(watch)
    return found
