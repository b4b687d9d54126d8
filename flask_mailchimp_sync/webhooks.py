"""The webhook endpoint: Mailchimp's GET validation and its form-encoded event POSTs.

It lives at ``<prefix>/webhook/<secret>``; the secret is compared in constant time and
a wrong one is answered like any unknown URL. Events are applied by :mod:`.inbound`.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, abort, request

from ._state import get_extension
from .inbound import apply_event, parse
from .models import utcnow

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
    settings.webhook_last_event = event.type
    settings.webhook_last_event_at = utcnow()
    if event.list_id not in {a.audience_id for a in settings.audiences}:
        log.info("Mailchimp webhook for an audience the shop does not sync: ignored")
    else:
        apply_event(extension, settings, event)
    extension.db.session.commit()
    return "ok"
