"""Mailchimp -> shop: webhook events, their registration, and reconcile.

Someone unsubscribing in Mailchimp (or bouncing: "cleaned") turns the shop's marketing
flag off, so staff never have to find them by hand. Shop writes made here are marked
as coming from Mailchimp, so they are not echoed back as archives.

Shops that cannot receive webhooks get the same through reconcile: every sync reads the
members who unsubscribed or were cleaned since the last one, and applies them here.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, request
from werkzeug.exceptions import BadRequest

from . import emails, signals, staging
from .client import MailchimpApi
from .extension import get_extension, real_app
from .models import utcnow
from .outbox import FROM_MAILCHIMP
from .public_url import webhook_url

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

blueprint = Blueprint("mailchimp_sync_webhook", __name__)

EVENTS = {"unsubscribe": True, "cleaned": True, "upemail": True, "profile": True,
          "subscribe": False, "campaign": False}  # fmt: skip
#: Only people and staff in Mailchimp: the shop's own API changes must not come back.
SOURCES = {"user": True, "admin": True, "api": False}
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


class MalformedEvent(BadRequest):
    description = "This is not a Mailchimp webhook event."


@dataclass(frozen=True)
class Event:
    type: str
    list_id: str
    email: str = ""
    new_email: str = ""
    first_name: str | None = None
    last_name: str | None = None


# -- the endpoint ------------------------------------------------------------------------


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
        log.log(ignored[0], "Mailchimp %s webhook %s: ignored", event.type, ignored[1])
    else:
        _apply(extension, settings, event)
    extension.db.session.commit()
    return "ok"


def _apply(extension: MailchimpSync, settings: Any, event: Event) -> None:
    """Apply *event*; a change the shop's database refuses is logged and acknowledged
    (Mailchimp would only send the same event again, for 75 minutes)."""
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


def _note(settings: Any, event: Event) -> None:
    """The page shows the webhook's health: the last event received, applied or not."""
    settings.webhook_last_event = event.type
    settings.webhook_last_event_at = utcnow()


def _ignored(extension: MailchimpSync, settings: Any, event: Event) -> tuple[int, str] | None:
    """Why an event is acknowledged without being applied (a log level and the reason)."""
    if event.list_id not in {a.audience_id for a in settings.audiences}:
        return logging.INFO, "for an audience the shop does not sync"
    if event.type in ("unsubscribe", "cleaned") and not _known(extension, event):
        # Stored, it would block a contact the shop adds later with that address; Mailchimp
        # itself says what such a member's status is when the shop first sends them.
        return logging.INFO, "for an address the shop does not know"
    if event.type == "upemail" and _remembered(extension, event.list_id, event.new_email):
        return logging.WARNING, "onto an address the shop already knows as another member"
    return None


def _known(extension: MailchimpSync, event: Event) -> bool:
    """Whether a shop contact has the event's address, or the shop remembers its member."""
    if _remembered(extension, event.list_id, event.email):
        return True
    session = extension.db.session
    return any(
        source.instances_with_email(session, event.email)
        for source in _sources_for(extension, event.list_id)
    )


def _remembered(extension: MailchimpSync, audience_id: str, email: str) -> bool:
    State = extension.models.MemberState
    query = sa.select(State.id).where(
        State.audience_id == audience_id, State.subscriber_hash == emails.subscriber_hash(email)
    )
    return extension.db.session.execute(query).first() is not None


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
        withdraw(extension, event.list_id, event.email, status)
    elif event.type == "upemail":
        move_address(extension, event.list_id, event.email, event.new_email)
    elif event.type == "profile" and settings.profile_updates:
        update_names(extension, event.list_id, event.email, event.first_name, event.last_name)
    else:
        log.info("Mailchimp webhook event %r: nothing to do", event.type)


# -- applying Mailchimp's changes to the shop --------------------------------------------


def _sources_for(extension: MailchimpSync, audience_id: str) -> list[Any]:
    settings = extension.settings_store().get()
    roles = {a.role for a in settings.audiences if a.audience_id == audience_id}
    return [s for s in extension.sources if s.role in roles]


def _quietly(extension: MailchimpSync) -> None:
    # These writes come from Mailchimp: the outbox must not send them back.
    extension.db.session.info[FROM_MAILCHIMP] = True


def withdraw(
    extension: MailchimpSync,
    audience_id: str,
    email: str,
    status: str,
    when: datetime | None = None,
) -> int:
    """Someone unsubscribed or bounced: the shop's flag off, the member's state noted.

    Returns how many contacts had their flag turned off. The caller commits.
    """
    _quietly(extension)
    session = extension.db.session
    turned_off = 0
    for source in _sources_for(extension, audience_id):
        for instance in source.instances_with_email(session, email):
            turned_off += source.withdraw_consent(instance)
    state = _member_state(extension, audience_id, email)
    if state.status != status:
        state.status = status
        state.status_changed_at = when or utcnow()
    signals.unsubscribe_received.send(
        real_app(), audience_id=audience_id, email=email, status=status, contacts=turned_off
    )
    return turned_off


def move_address(extension: MailchimpSync, audience_id: str, old: str, new: str) -> bool:
    """The member changed address in Mailchimp: follow it, unless another contact has it."""
    _quietly(extension)
    session = extension.db.session
    sources = _sources_for(extension, audience_id)
    if any(source.instances_with_email(session, new) for source in sources):
        log.warning("Mailchimp moved a member to an address another shop contact has: left as is")
        return False
    moved = False
    for source in sources:
        for instance in source.instances_with_email(session, old):
            moved |= source.change_email(instance, new)
    State = extension.models.MemberState
    state = (
        session.query(State)
        .filter_by(audience_id=audience_id, subscriber_hash=emails.subscriber_hash(old))
        .one_or_none()
    )
    if state is not None:
        state.email, state.subscriber_hash = new, emails.subscriber_hash(new)
        Link = extension.models.ContactState
        session.query(Link).filter_by(
            audience_id=audience_id, subscriber_hash=emails.subscriber_hash(old)
        ).update({"subscriber_hash": state.subscriber_hash})
    return moved


def update_names(
    extension: MailchimpSync, audience_id: str, email: str, first: str | None, last: str | None
) -> bool:
    _quietly(extension)
    changed = False
    for source in _sources_for(extension, audience_id):
        for instance in source.instances_with_email(extension.db.session, email):
            changed |= source.change_names(instance, first, last)
    return changed


def _member_state(extension: MailchimpSync, audience_id: str, email: str) -> Any:
    State = extension.models.MemberState
    member_hash = emails.subscriber_hash(email)
    session = extension.db.session
    state = (
        session.query(State)
        .filter_by(audience_id=audience_id, subscriber_hash=member_hash)
        .one_or_none()
    )
    if state is None:
        state = State(
            audience_id=audience_id, subscriber_hash=member_hash, email=email, sent=False, tags=""
        )
        session.add(state)
    return state


def reconcile(extension: MailchimpSync) -> int:
    """Read who unsubscribed or bounced in Mailchimp since the last look; apply it.

    For shops that cannot receive webhooks (and as a safety net for those that can).
    Returns how many shop contacts had their flag turned off.
    """
    from .sync import PULL_OVERLAP

    store = extension.settings_store()
    settings, api_key = store.get(), store.api_key()
    if settings is None or api_key is None:
        return 0
    api = MailchimpApi(api_key, current_app.config)
    turned_off = 0
    for audience_id in sorted({a.audience_id for a in settings.audiences}):
        role_audiences = [a for a in settings.audiences if a.audience_id == audience_id]
        pulled = [a.pulled_at for a in role_audiences if a.pulled_at is not None]
        since = min(pulled) - PULL_OVERLAP if pulled else None
        started = utcnow()
        for status in ("unsubscribed", "cleaned"):
            for member in api.iter_members(audience_id, since=since, status=status):
                state = _member_state(extension, audience_id, member["email_address"])
                if state.status != status:
                    turned_off += withdraw(extension, audience_id, member["email_address"], status)
        if pulled:  # a first full read (which also matches members) is left to the sync
            for role_audience in role_audiences:
                role_audience.pulled_at = started
        extension.db.session.commit()
    return turned_off


# -- registration ------------------------------------------------------------------------


def register(extension: MailchimpSync, *, rotate: bool = False) -> list[str]:
    """Register (or repair) the shop's webhook on every chosen audience.

    Does nothing without ``MAILCHIMP_SYNC_PUBLIC_URL``. Returns the audiences done.
    Raises :class:`~.exceptions.MailchimpApiError` when Mailchimp refuses.
    """
    store = extension.settings_store()
    settings, api_key = store.get(), store.api_key()
    config = current_app.config
    if settings is None or api_key is None or not config.get("MAILCHIMP_SYNC_PUBLIC_URL"):
        return []
    if rotate or not settings.webhook_secret:
        settings.webhook_secret = secrets.token_urlsafe(32)
    url = webhook_url(config, settings.webhook_secret)
    ours = webhook_url(config, "")
    api = MailchimpApi(api_key, config, retries=1)
    done = []
    for audience_id in sorted({a.audience_id for a in settings.audiences}):
        hooks = api.webhooks(audience_id)
        keep = next((h for h in hooks if h["url"] == url and _configured(h)), None)
        for hook in hooks:
            if hook is not keep and hook["url"].startswith(ours):  # ours, but stale
                api.delete_webhook(audience_id, hook["id"])
        if keep is None:
            keep = api.add_webhook(audience_id, {"url": url, "events": EVENTS, "sources": SOURCES})
        for role_audience in settings.audiences:
            if role_audience.audience_id == audience_id:
                role_audience.webhook_id = keep["id"]
        done.append(audience_id)
    return done


def unregister(extension: MailchimpSync) -> None:
    """Remove the shop's webhooks (before forgetting the key); failures are logged."""
    store = extension.settings_store()
    settings, api_key = store.get(), store.api_key()
    if settings is None or api_key is None:
        return
    api = MailchimpApi(api_key, current_app.config, retries=1)
    for role_audience in settings.audiences:
        if role_audience.webhook_id:
            try:
                api.delete_webhook(role_audience.audience_id, role_audience.webhook_id)
            except Exception as error:  # the key may be revoked already: not a reason to stay
                log.warning("Could not remove the Mailchimp webhook: %s", error)
            role_audience.webhook_id = None


def _configured(hook: Mapping[str, Any]) -> bool:
    events, sources = hook.get("events", {}), hook.get("sources", {})
    return all(events.get(k) == v for k, v in EVENTS.items() if v) and all(
        sources.get(k) == v for k, v in SOURCES.items()
    )
