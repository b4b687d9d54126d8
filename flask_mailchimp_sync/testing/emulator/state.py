"""What the emulated Mailchimp holds, and the operations of its API on that state.

Everything here is plain Python guarded by one lock, so tests can both drive it over
HTTP and inspect or arrange it directly (``emulator.state``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from . import errors, rules
from .entities import (
    DEFAULT_MERGE_FIELDS,
    DEFAULT_OPTIONS,
    Account,
    Audience,
    Connections,
    Member,
    hex_id,
    now,
)
from .schemas import BATCH_LIMIT


class EmulatorState:
    """Accounts, audiences and members, plus a log of every API request."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.audiences: dict[str, Audience] = {}
        self.requests: list[dict[str, Any]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.connections = Connections()
        #: When recording: (time, audience id, lowercased email, status) for each change
        #: of a member's status, so a benchmark can tell when a change arrived.
        self.changes: list[tuple[float, str, str, str]] | None = None
        #: Whether ``GET /lists/{id}/members`` without ``status`` lists archived members
        #: too. Mailchimp's docs do not settle it, so tests run the plugin both ways.
        self.archived_in_unfiltered_list = False

    def record_changes(self) -> None:
        """Start (or restart) the log of status changes."""
        with self.lock:
            self.changes = []

    def _changed(self, audience: Audience, member: Member) -> None:
        member.last_changed = now()
        if self.changes is not None:
            entry = (time.time(), audience.id, member.email.lower(), member.visible_status)
            self.changes.append(entry)

    # -- arranging state (tests, the demo) ------------------------------------------

    def add_account(self, name: str = "Test Shop", *, api_key: str | None = None) -> Account:
        """Create an account and return it; its ``api_key`` is what clients log in with."""
        key = api_key or f"{secrets.token_hex(16)}-us6"
        account = Account(
            api_key=key,
            account_id=secrets.token_hex(12),
            name=name,
            email=f"owner@{name.lower().replace(' ', '')}.shop",
        )
        with self.lock:
            self.accounts[key] = account
        return account

    def add_audience(self, account: Account | str, name: str) -> Audience:
        key = account.api_key if isinstance(account, Account) else account
        audience = Audience(id=hex_id(), name=name, account_key=key)
        for order, (tag, label, kind) in enumerate(DEFAULT_MERGE_FIELDS, start=1):
            audience.merge_fields[tag] = _merge_field(order, tag, label, kind)
        with self.lock:
            self.audiences[audience.id] = audience
        return audience

    def add_member(
        self,
        audience_id: str,
        email: str,
        status: str = "subscribed",
        *,
        merge_fields: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> Member:
        """Put a member straight in, as if they signed up on a Mailchimp form."""
        with self.lock:
            member = Member(email=email, status=status, merge_fields=dict(merge_fields or {}))
            member.tags = list(tags)
            member.timestamp_opt = now()
            self.audiences[audience_id].members[member.hash] = member
            return member

    def set_status(self, audience_id: str, email: str, status: str) -> Member:
        """Change a member's status as the member (or a bounce) would: no checks."""
        with self.lock:
            member = self.audiences[audience_id].members[rules.subscriber_hash(email)]
            member.status = status
            member.last_changed = now()
            return member

    # -- reading state ----------------------------------------------------------------

    def member(self, audience_id: str, email: str) -> Member | None:
        with self.lock:
            return self.audiences[audience_id].members.get(rules.subscriber_hash(email))

    def members(self, audience_id: str) -> dict[str, Member]:
        """Every member of an audience by lowercased email (archived ones included)."""
        with self.lock:
            return {m.email.lower(): m for m in self.audiences[audience_id].members.values()}

    def write_requests(self, *, user_agent_prefix: str = "") -> list[dict[str, Any]]:
        """Logged requests that could change something (not GET)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r["method"] != "GET" and r["user_agent"].startswith(user_agent_prefix)
            ]

    # -- the API ----------------------------------------------------------------------

    def account_for(self, api_key: str | None) -> Account:
        if not api_key:
            raise errors.ApiError(
                401, "API Key Missing", "Your request did not include an API key."
            )
        account = self.accounts.get(api_key)
        if account is None:
            raise errors.ApiError(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        return account

    def audience(self, account: Account, list_id: str) -> Audience:
        audience = self.audiences.get(list_id)
        if audience is None or audience.account_key != account.api_key:
            raise errors.not_found()
        return audience

    def audiences_of(self, account: Account) -> list[Audience]:
        return [a for a in self.audiences.values() if a.account_key == account.api_key]

    def find_member(self, audience: Audience, hash_or_email: str) -> Member:
        key = rules.subscriber_hash(hash_or_email) if "@" in hash_or_email else hash_or_email
        member = audience.members.get(key.lower())
        if member is None:
            raise errors.not_found()
        return member

    def create_member(self, audience: Audience, body: dict[str, Any], status: str) -> Member:
        email = body["email_address"].strip()
        if rules.subscriber_hash(email) in audience.forgotten:
            raise errors.forgotten(email)
        rules.check_email(email)
        merge_fields = body.get("merge_fields") or {}
        rules.check_merge_fields(merge_fields, audience.merge_fields, creating=True)
        member = Member(email=email, status=status, merge_fields=dict(merge_fields))
        member.timestamp_opt = now() if status == "subscribed" else None
        _apply_profile(member, body)
        member.tags = list(dict.fromkeys(body.get("tags") or []))
        audience.members[member.hash] = member
        self._changed(audience, member)
        return member

    def update_member(self, audience: Audience, member: Member, body: dict[str, Any]) -> None:
        """PUT/PATCH on an existing member: address, profile, and ``status`` only if sent."""
        new_email = (body.get("email_address") or member.email).strip()
        if new_email.lower() != member.email.lower():
            rules.check_email(new_email)
            if rules.subscriber_hash(new_email) in audience.members:
                raise errors.member_exists(new_email)
        merge_fields = body.get("merge_fields") or {}
        rules.check_merge_fields(merge_fields, audience.merge_fields, creating=False)
        status = body.get("status")
        if status is not None:
            rules.check_status_change(member.email, member.status, status)
        # Every check passed: now change, so a refused request changes nothing.
        if new_email != member.email:
            del audience.members[member.hash]
            member.email = new_email
            audience.members[member.hash] = member
        member.merge_fields.update(merge_fields)
        _apply_profile(member, body)
        if status is not None:
            if status == "subscribed" and (member.archived or member.status != "subscribed"):
                member.timestamp_opt = now()
            member.status = status
            member.archived = False  # an explicit status is what brings an archived member back
        self._changed(audience, member)

    def archive_member(self, audience: Audience, hash_or_email: str) -> None:
        member = self.find_member(audience, hash_or_email)
        if member.archived:
            raise errors.not_found()
        member.archived = True
        self._changed(audience, member)

    def delete_permanently(self, audience: Audience, hash_or_email: str) -> None:
        member = self.find_member(audience, hash_or_email)
        del audience.members[member.hash]
        audience.forgotten.add(member.hash)

    def update_tags(self, member: Member, tags: list[dict[str, Any]]) -> None:
        for tag in tags:
            name = tag["name"].strip()
            if tag["status"] == "active" and name not in member.tags:
                member.tags.append(name)
            elif tag["status"] == "inactive" and name in member.tags:
                member.tags.remove(name)
        member.last_changed = now()

    def batch_subscribe(self, audience: Audience, body: dict[str, Any]) -> dict[str, Any]:
        """POST /lists/{id}: up to 500 members; failures per member, never for the batch.

        With ``update_existing`` true an existing member takes the ``status`` sent, which
        is why a careful client never sends existing members through here with it.
        """
        update_existing = bool(body.get("update_existing"))
        sync_tags = bool(body.get("sync_tags"))
        created: list[Member] = []
        updated: list[Member] = []
        failures: list[dict[str, Any]] = []
        for entry in body["members"][:BATCH_LIMIT]:
            email = entry["email_address"].strip()
            existing = audience.members.get(rules.subscriber_hash(email))
            try:
                if existing is None:
                    created.append(self.create_member(audience, entry, entry["status"]))
                elif update_existing:
                    self.update_member(audience, existing, entry)
                    _batch_tags(existing, entry.get("tags") or [], replace=sync_tags)
                    updated.append(existing)
                else:
                    failures.append(
                        _batch_error(
                            email,
                            f"{email} is already a list member, do you want to update? "
                            "please provide update_existing:true in the request body",
                            "ERROR_CONTACT_EXISTS",
                        )
                    )
            except errors.ApiError as refused:
                field, message = _first_field_error(refused)
                failures.append(
                    _batch_error(email, refused.detail, "ERROR_GENERIC", field, message)
                )
        return {
            "new_members": [m.as_json(audience.id) for m in created],
            "updated_members": [m.as_json(audience.id) for m in updated],
            "errors": failures,
            "total_created": len(created),
            "total_updated": len(updated),
            "error_count": len(failures),
        }

    def list_members(
        self, audience: Audience, *, status: str | None, since: datetime | None
    ) -> Iterator[Member]:
        hide_archived = status is None and not self.archived_in_unfiltered_list
        for member in audience.members.values():
            visible = member.visible_status
            if (hide_archived and visible == "archived") or (status and visible != status):
                continue
            if since is not None and member.last_changed < since:
                continue
            yield member

    def add_webhook(self, audience: Audience, body: dict[str, Any]) -> dict[str, Any]:
        url = body["url"].strip()
        if not url.lower().startswith(("http://", "https://")):
            raise errors.schema_error(
                [{"field": "url", "message": "This value is not a valid URL."}]
            )
        if any(hook["url"] == url for hook in audience.webhooks.values()):
            raise errors.invalid_resource(
                "Sorry, you can't use the same webhook URL more than once."
            )
        events = dict.fromkeys(
            ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign"), False
        )
        events.update(body.get("events") or {})
        sources = dict.fromkeys(("user", "admin", "api"), False)
        sources.update(body.get("sources") or {})
        hook = {
            "id": hex_id(),
            "url": url,
            "events": events,
            "sources": sources,
            "list_id": audience.id,
        }
        audience.webhooks[hook["id"]] = hook
        return hook

    def add_merge_field(self, audience: Audience, body: dict[str, Any]) -> dict[str, Any]:
        order = len(audience.merge_fields) + 1
        tag = (body.get("tag") or f"MMERGE{order}").upper()
        if tag in audience.merge_fields:
            raise errors.invalid_resource(
                f'A merge field with the tag "{tag}" already exists for this list.'
            )
        field = _merge_field(order, tag, body["name"], body["type"])
        field["required"] = bool(body.get("required"))
        field["options"].update(body.get("options") or {})
        audience.merge_fields[tag] = field
        return field


def _batch_tags(member: Member, tags: list[str], *, replace: bool) -> None:
    """Since 2022 batch subscribe adds tags to existing members; sync_tags replaces them."""
    if replace:
        member.tags = list(dict.fromkeys(tags))
    else:
        member.tags += [tag for tag in dict.fromkeys(tags) if tag not in member.tags]


def _apply_profile(member: Member, body: dict[str, Any]) -> None:
    for name in ("email_type", "language", "vip"):
        if body.get(name) is not None:
            setattr(member, name, body[name])


def _merge_field(order: int, tag: str, name: str, kind: str) -> dict[str, Any]:
    return {
        "merge_id": order,
        "tag": tag,
        "name": name,
        "type": kind,
        "required": False,
        "default_value": "",
        "public": True,
        "display_order": order + 1,
        "options": dict(DEFAULT_OPTIONS.get(kind, {})),
        "help_text": "",
    }


def _batch_error(
    email: str, error: str, code: str, field: str = "", field_message: str = ""
) -> dict[str, Any]:
    return {
        "email_address": email,
        "error": error,
        "error_code": code,
        "field": field,
        "field_message": field_message,
    }


def _first_field_error(refused: errors.ApiError) -> tuple[str, str]:
    if refused.errors:
        return refused.errors[0]["field"], refused.errors[0]["message"]
    return "", ""
