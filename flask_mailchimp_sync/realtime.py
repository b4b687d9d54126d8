"""Real time: the host's changes to contacts, captured in its own transaction.

Session hooks (attached in ``init_app``, only for the host's ``db``) note every change
to a registered contact — or to a row its fields read (:mod:`.watches`) — as an outbox
row, written by the same flush, so it commits or rolls back with the host's change.
After a commit the dispatcher is nudged (no network call in the request); a job then
delivers the outbox (:mod:`.engine.delivery`). A failed delivery stays in the outbox
and is retried with backoff; a Sync covers whatever is still waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy import event, orm

from . import bounds
from ._state import EXTENSION_KEY, real_app
from .engine.outbox import Outbox
from .engine.shop import FROM_MAILCHIMP
from .jobs import dispatcher
from .models import utcnow
from .watches import Watch

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

#: Session.info key: the transaction wrote outbox rows.
WROTE_OUTBOX = "mailchimp_sync.outbox"


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
    state = current_app.extensions.get(EXTENSION_KEY)
    return state is not None and state.extension is extension


def _after_flush(extension: MailchimpSync, session: orm.Session) -> None:
    if session.info.get(FROM_MAILCHIMP) or not _ours(extension, session):
        return
    watches = extension.watches_by_model()
    if not watches:
        return
    changed: set[tuple[str, str]] = set()
    gone: set[tuple[str, str]] = set()
    for instance, deleted in _touched(session):
        for model in type(instance).__mro__:
            for watch in watches.get(model, ()):
                if deleted or instance in session.new or watch.concerned(instance):
                    found = _contacts_of(watch, session, instance)
                    changed |= found
                    if deleted and watch.model is watch.source.model:
                        gone |= found  # the contact itself is deleted
    # A key too long to store would fail the host's commit; every sync reports that
    # contact as skipped instead.
    table = extension.models.Outbox
    changed = {(name, key) for name, key in changed if bounds.fits(table, "contact_key", key)}
    if changed:
        last_sent_as = _unlink(extension, session, gone & changed)
        rows = [
            {"source": name, "contact_key": key, "created_at": utcnow(), "attempts": 0,
             "audience_id": last_sent_as.get((name, key), (None, None))[0],
             "subscriber_hash": last_sent_as.get((name, key), (None, None))[1]}
            for name, key in sorted(changed)
        ]  # fmt: skip
        session.execute(sa.insert(table), rows)
        session.info[WROTE_OUTBOX] = True


def _unlink(
    extension: MailchimpSync, session: orm.Session, gone: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """Forget the links of deleted contacts, returning the members they were sent as.

    The delivery still needs that member (to archive it), and a row inserted later may
    get the same key (SQLite reuses them): it must not inherit the deleted one's past.
    """
    if not gone:
        return {}
    Link = extension.models.ContactState
    links = session.execute(
        sa.select(
            Link.id, Link.source, Link.contact_key, Link.audience_id, Link.subscriber_hash
        ).where(Link.contact_key.in_({key for _, key in gone}))
    ).all()
    mine = [link for link in links if (link.source, link.contact_key) in gone]
    if mine:
        session.execute(sa.delete(Link).where(Link.id.in_([link.id for link in mine])))
    return {
        (link.source, link.contact_key): (link.audience_id, link.subscriber_hash) for link in mine
    }


def _contacts_of(watch: Watch, session: orm.Session, instance: Any) -> set[tuple[str, str]]:
    """The contacts a changed row concerns; never an error in the host's commit."""
    try:
        return {(watch.source.name, key) for key in watch.contacts_of(session, instance)}
    except Exception:
        log.warning(
            "Could not tell which %s contacts a change of %s concerns; the next Sync sends it",
            watch.source.name, type(instance).__name__, exc_info=True,
        )  # fmt: skip
        return set()


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
        # Never let a nudge break the host's commit: the outbox row is already safe.
        try:
            dispatcher(real_app()).nudge()
        except Exception:  # pragma: no cover - defensive
            log.exception("Could not schedule delivery of Mailchimp changes")


def watches_by_model(extension: MailchimpSync) -> dict[type, list[Watch]]:
    """Which host models to watch, and for which sources (a model may serve several)."""
    found: dict[type, list[Watch]] = {}
    for source in extension.sources:
        for watch in source.watches():
            found.setdefault(watch.model, []).append(watch)
    return found


def outbox_summary(extension: MailchimpSync) -> dict[str, Any]:
    """What the real-time panel shows of the outbox."""
    failing = int(current_app.config["MAILCHIMP_SYNC_OUTBOX_FAILED_AFTER"])
    return Outbox(extension.db.session, extension.models).summary(failing)


def recent_deliveries(extension: MailchimpSync, limit: int = 5) -> list[tuple[Any, list[Any]]]:
    """The latest real-time deliveries, newest first, each with the contacts it listed
    (skipped, blocked or failed, with reasons), for the real-time panel."""
    Delivery, Item = extension.models.Delivery, extension.models.SyncRunItem
    session = extension.db.session
    query = sa.select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    deliveries = list(session.execute(query).scalars())
    items: dict[int, list[Any]] = {d.id: [] for d in deliveries}
    if deliveries:
        listed = sa.select(Item).where(Item.delivery_id.in_(items)).order_by(Item.id)
        for item in session.execute(listed).scalars():
            items[item.delivery_id].append(item)
    return [(delivery, items[delivery.id][:20]) for delivery in deliveries]


def waiting_for_first_sync(settings: Any) -> list[str] | None:
    """``None`` once every chosen audience has had its first Sync; else the roles still
    waiting for it (empty when none is chosen yet): no real-time updates for them."""
    if settings is None:
        return []
    waiting = [a.role for a in settings.audiences if a.first_synced_at is None]
    return waiting if waiting or not settings.audiences else None
