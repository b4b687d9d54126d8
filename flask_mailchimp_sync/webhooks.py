"""The webhook endpoint: Mailchimp's GET validation and its form-encoded event POSTs.

It lives at ``<prefix>/webhook/<secret>``; the secret is compared in constant time and
a wrong one is answered like any unknown URL. Events are applied by :mod:`.inbound`.
Mailchimp sends an event again for 75 minutes until it is answered 200, so an event that
cannot be applied is acknowledged and logged, never answered 500.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Blueprint, abort, request

from . import emails
from ._state import get_extension
from .engine import shop
from .inbound import Event, apply_event, parse
from .models import utcnow

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

blueprint = Blueprint("mailchimp_sync_webhook", __name__)


@blueprint.route("/webhook/<secret>", methods=["GET", "POST"])
def receive(secret: str) -> Any:
    """Mailchimp's GET validation and its form-encoded event POSTs."""
    extension = get_extension()
    settings = extension.settings_store().get()
    expected = (settings.webhook_secret or "") if settings is not None else ""
    if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
        abort(404)  # the same answer as for any unknown URL: nothing to learn here
    if request.method == "GET":
        return "ok"
    event = parse(request.form)
    _note(settings, event)
    ignored = _ignored(extension, settings, event)
    if ignored:
        log.info("Mailchimp %s webhook %s: ignored", event.type, ignored)
    else:
        _apply(extension, settings, event)
    extension.db.session.commit()
    return "ok"


def _note(settings: Any, event: Event) -> None:
    """The page shows the webhook's health: the last event received, applied or not."""
    settings.webhook_last_event = event.type
    settings.webhook_last_event_at = utcnow()


def _ignored(extension: MailchimpSync, settings: Any, event: Event) -> str | None:
    """Why an event is acknowledged without being applied, or ``None``."""
    if event.list_id not in {a.audience_id for a in settings.audiences}:
        return "for an audience the shop does not sync"
    if event.type in ("unsubscribe", "cleaned") and not _known(extension, event):
        # Stored, it would block a contact the shop adds later with that address; Mailchimp
        # itself says what such a member's status is when the shop first sends them.
        return "for an address the shop does not know"
    return None


def _known(extension: MailchimpSync, event: Event) -> bool:
    """Whether the shop remembers the event's member, or has a contact with its address."""
    State = extension.models.MemberState
    remembered = sa.select(State.id).where(
        State.audience_id == event.list_id,
        State.subscriber_hash == emails.subscriber_hash(event.email),
    )
    if extension.db.session.execute(remembered).first() is not None:
        return True
    return any(shop.shop_contacts(extension, event.list_id, event.email))


def _apply(extension: MailchimpSync, settings: Any, event: Event) -> None:
    """Apply *event*; a change the shop's database refuses is logged and acknowledged."""
    session = extension.db.session
    try:
        apply_event(extension, settings, event)
        session.flush()
    except (sa.exc.IntegrityError, sa.exc.DataError) as refused:
        session.rollback()
        log.warning(
            "Mailchimp %s webhook not applied: the shop's database refused it (%s)",
            event.type,
            type(refused.orig).__name__,
        )
        _note(settings, event)
