"""Connecting a Mailchimp account and choosing audiences, for the page and the CLI alike.

Nothing is saved unless every check passed: the key's shape (before any network
call), the key against Mailchimp, and each audience ID against the account.
Callers commit. Staff wait on these calls, so they are not retried: a failure is
reported at once and staff can simply press the button again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import public_url
from .client import AudienceInfo, MailchimpApi, staff_api
from .crypto import data_center
from .exceptions import ConnectionProblem, MailchimpSyncError, StoredKeyUnreadableError
from .public_url import webhook_url
from .sources import default_tag

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

#: Mailchimp caps tag names at 100 characters.
MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class AudienceChoice:
    """Where one role's contacts go: an audience ID (``None``: not synced) and their tag."""

    audience_id: str | None
    tag: str | None = None


def _staff_api(api_key: str) -> MailchimpApi:
    return staff_api(api_key, current_app.config)


def connect(
    extension: MailchimpSync, api_key: str, choices: Mapping[str, AudienceChoice] | None = None
) -> Any:
    """Verify *api_key* and any audiences chosen with it, then save them (encrypted)."""
    api_key = (api_key or "").strip()
    try:
        data_center(api_key)
        api = _staff_api(api_key)
        account = api.verify()
    except MailchimpSyncError as problem:
        raise ConnectionProblem("api_key", str(problem)) from None
    store = extension.settings_store()
    previous = store.get()
    if previous is not None and previous.account_id == account.id:
        # The same account again (after Disconnect, or with a new key): a role given no
        # audience keeps the one it has.
        choices = {role: c for role, c in (choices or {}).items() if c.audience_id}
    elif previous is not None:
        # Another account: the audiences chosen for the last one are not in it.
        choices = {role: AudienceChoice(None) for role in extension.roles} | dict(choices or {})
    verified = _verify_audiences(api, choices or {})
    if previous is not None and previous.account_id != account.id:
        previous.webhook_secret = None  # a new account gets a new webhook address
    settings = store.save_account(api_key, account_id=account.id, account_name=account.name)
    _save_choices(extension, verified, choices or {})
    return settings


def choose_audiences(
    extension: MailchimpSync,
    choices: Mapping[str, AudienceChoice],
    *,
    double_opt_in: bool | None = None,
) -> Any:
    """Verify and save each role's audience (and the options) for the connected account."""
    store = extension.settings_store()
    try:
        api_key = store.api_key()
    except StoredKeyUnreadableError as unreadable:
        raise ConnectionProblem("api_key", str(unreadable)) from None
    if api_key is None:
        raise ConnectionProblem("api_key", "Connect a Mailchimp account first.")
    verified = _verify_audiences(_staff_api(api_key), choices)
    _save_choices(extension, verified, choices)
    settings = store.get_or_create()
    if double_opt_in is not None:
        settings.double_opt_in = double_opt_in
    return settings


def register_webhooks(extension: MailchimpSync, *, rotate: bool = False) -> str | None:
    """Register (or repair) the webhooks; a sentence for staff when that failed.

    A failure does not undo the connection: reconcile still brings unsubscribes in.
    """
    try:
        public_url.check(current_app.config)  # the config may have changed since init_app
        register(extension, rotate=rotate)
    except (MailchimpSyncError, ValueError) as problem:  # mailchimp3 raises ValueError too
        extension.db.session.rollback()
        return (
            f"The webhook could not be registered ({problem}); every sync still reads unsubscribes."
        )
    extension.db.session.commit()
    return None


def disconnect(extension: MailchimpSync) -> str | None:
    """Forget the key (webhooks removed first) and the webhook's secret.

    Members stay in Mailchimp as they are, and real-time updates stop (changes wait in
    the outbox). The audience choices are kept for reconnecting to the same account;
    :func:`connect` clears them when another account is connected.
    Returns a sentence for staff when a webhook had to be left in Mailchimp.
    """
    store = extension.settings_store()
    settings = store.get()
    if settings is None:
        return None
    left = None
    try:
        unregister(extension)
    except StoredKeyUnreadableError:  # forgetting an unreadable key is the way out of it
        if any(audience.webhook_id for audience in settings.audiences):
            left = (
                "The webhook registered in Mailchimp could not be removed, because the stored "
                "key cannot be read: delete it in Mailchimp (the audience's Settings > Webhooks)."
            )
    account_id = settings.account_id
    store.forget_account()
    # Which account the kept choices belong to (never shown; compared on reconnect).
    settings.account_id = account_id
    # A URL that leaked while connected must not work for the next connection.
    settings.webhook_secret = None
    return left


def list_audiences(extension: MailchimpSync) -> list[AudienceInfo]:
    """The connected account's audiences (raises :class:`MailchimpApiError` when it can't)."""
    api_key = extension.settings_store().api_key()
    return [] if api_key is None else _staff_api(api_key).audiences()


def _verify_audiences(
    api: MailchimpApi, choices: Mapping[str, AudienceChoice]
) -> dict[str, AudienceInfo]:
    verified: dict[str, AudienceInfo] = {}
    for role, choice in choices.items():
        if choice.tag is not None and not 0 < len(choice.tag.strip()) <= MAX_TAG_LENGTH:
            raise ConnectionProblem(role, f"A tag name is 1 to {MAX_TAG_LENGTH} characters.")
        if not choice.audience_id:
            continue
        try:
            verified[role] = api.audience(choice.audience_id.strip())
        except MailchimpSyncError as problem:
            raise ConnectionProblem(role, str(problem)) from None
    return verified


def _save_choices(
    extension: MailchimpSync,
    verified: Mapping[str, AudienceInfo],
    choices: Mapping[str, AudienceChoice],
) -> None:
    store = extension.settings_store()
    for role, choice in choices.items():
        audience = verified.get(role)
        store.set_audience(
            role,
            audience.id if audience else None,
            name=audience.name if audience else None,
            tag=(choice.tag or "").strip() or default_tag(role),
        )


# -- the webhook, registered on Mailchimp ----------------------------------------------

EVENTS = {"unsubscribe": True, "cleaned": True, "upemail": True, "profile": True,
          "subscribe": False, "campaign": False}  # fmt: skip
#: Only people and staff in Mailchimp: the shop's own API changes must not come back.
SOURCES = {"user": True, "admin": True, "api": False}


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
