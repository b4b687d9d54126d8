"""Mailchimp -> shop: webhook events and reconcile.

Someone unsubscribing in Mailchimp (or bouncing: "cleaned") turns the shop's marketing
flag off, so staff never have to find them by hand; an address changed in Mailchimp
follows to the shop; names may too. Shops that cannot receive webhooks get the same
through reconcile, which reads the members who unsubscribed or were cleaned since the
last look (the sync's own pull window) and applies them the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import emails
from .client import MailchimpApi
from .engine import pull, shop, staging
from .exceptions import MalformedEvent
from .models import utcnow

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

#: What each event needs in its form body (PHP-style keys), besides ``type``.
REQUIRED = {
    "unsubscribe": ("data[list_id]", "data[email]"),
    "cleaned": ("data[list_id]", "data[email]"),
    "profile": ("data[list_id]", "data[email]"),
    "upemail": ("data[list_id]", "data[old_email]", "data[new_email]"),
}
ADDRESSES = ("data[email]", "data[old_email]", "data[new_email]")
NAMES = ("data[merges][FNAME]", "data[merges][LNAME]")
EVENT_TYPE = re.compile(r"[A-Za-z_]{1,40}")


@dataclass(frozen=True)
class Event:
    type: str
    list_id: str
    email: str = ""
    new_email: str = ""
    first_name: str | None = None
    last_name: str | None = None


def parse(form: Mapping[str, str]) -> Event:
    kind = (form.get("type") or "").strip()
    if not EVENT_TYPE.fullmatch(kind):
        raise MalformedEvent()
    if any("\x00" in value for value in form.values()):
        raise MalformedEvent("A webhook body never holds NUL characters.")
    needed = REQUIRED.get(kind, ("data[list_id]",))
    if any(not (form.get(key) or "").strip() for key in needed):
        raise MalformedEvent(f"A {kind!r} event needs {', '.join(needed)}.")
    values = {key: (form.get(key) or "").strip() for key in form}
    for key in ADDRESSES:
        if values.get(key) and emails.problem(values[key]) is not None:
            raise MalformedEvent(f"{key} is not an email address.")
    # Names are read from profile events only: a name never stops an unsubscribe.
    first, last = (values.get(key) if kind == "profile" else None for key in NAMES)
    for key, name in zip(NAMES, (first, last), strict=True):
        if name is not None and staging.field_problem(name) is not None:
            raise MalformedEvent(f"{key} is not a name a merge field can hold.")
    return Event(
        type=kind,
        list_id=values["data[list_id]"][:32],
        email=values.get("data[email]") or values.get("data[old_email]", ""),
        new_email=values.get("data[new_email]", ""),
        first_name=first,
        last_name=last,
    )


def apply_event(extension: MailchimpSync, settings: Any, event: Event) -> None:
    if event.type in ("unsubscribe", "cleaned"):
        status = "unsubscribed" if event.type == "unsubscribe" else "cleaned"
        shop.withdraw(extension, event.list_id, event.email, status)
    elif event.type == "upemail":
        shop.move_address(extension, event.list_id, event.email, event.new_email)
    elif event.type == "profile" and settings.profile_updates:
        shop.update_names(extension, event.list_id, event.email, event.first_name, event.last_name)
    else:
        log.info("Mailchimp webhook event %r: nothing to do", event.type)


def reconcile(extension: MailchimpSync) -> int:
    """Read who unsubscribed or bounced in Mailchimp since the last look; apply it.

    For shops that cannot receive webhooks (and as a safety net for those that can).
    Returns how many shop contacts had their flag turned off.
    """
    store = extension.settings_store()
    settings, api_key = store.get(), store.api_key()
    if settings is None or api_key is None:
        return 0
    api = MailchimpApi(api_key, current_app.config)
    turned_off = 0
    for audience_id in sorted({a.audience_id for a in settings.audiences}):
        role_audiences = [a for a in settings.audiences if a.audience_id == audience_id]
        since = pull.pull_window(role_audiences)
        started = utcnow()
        for member in pull.read_members(api, audience_id, since, ("unsubscribed", "cleaned")):
            # Every time, even when the ledger knew the status: a contact linked to the
            # member may have consented since (an address changed, a flag ticked again).
            email, status = member["email_address"], member["status"]
            turned_off += shop.withdraw(extension, audience_id, email, status)
        if since is not None:  # a first full read (which also matches members) is the sync's
            for role_audience in role_audiences:
                role_audience.pulled_at = started
        extension.db.session.commit()
    return turned_off
