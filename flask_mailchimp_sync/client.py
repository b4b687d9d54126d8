"""The only module that talks to Mailchimp.

A client is built per call or per job from the app's config, never at import and never
shared, so each app (and each worker) uses its own settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from mailchimp3 import MailChimp
from mailchimp3.mailchimpclient import MailChimpError

from . import budget
from ._version import __version__
from .batch_archive import batch_results
from .call_policy import backoff_delay, is_transient, translate_error
from .crypto import data_center
from .exceptions import (
    AudienceNotFoundError,
    MailchimpApiError,
    MailchimpUnreachableError,
)

#: Sent with every request, so Mailchimp's logs (and the emulator) can tell our calls apart.
USER_AGENT = f"flask-mailchimp-sync/{__version__}"
MEMBER_FIELDS = "members.email_address,members.status,members.merge_fields,members.tags,total_items"


def api_base_url(api_key: str, config: Mapping[str, Any]) -> str:
    """Mailchimp's base URL for *api_key*, or ``MAILCHIMP_SYNC_API_URL`` when set."""
    override = config.get("MAILCHIMP_SYNC_API_URL")
    if override:
        # mailchimp3 joins paths with urljoin: without the slash "/3.0" would be dropped.
        return override if override.endswith("/") else override + "/"
    return f"https://{data_center(api_key)}.api.mailchimp.com/3.0/"


def build_client(api_key: str, config: Mapping[str, Any]) -> MailChimp:
    """A mailchimp3 client for *api_key*, with a timeout and the configured base URL.

    The key's shape is checked first (:class:`~.exceptions.InvalidApiKeyError`), so a
    malformed key never leaves the process.
    """
    base_url = api_base_url(api_key, config)
    client = MailChimp(
        mc_api=api_key.strip(),
        timeout=float(config.get("MAILCHIMP_SYNC_TIMEOUT") or 30.0),
        request_headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )
    client.base_url = base_url
    return client


@dataclass(frozen=True)
class AccountInfo:
    id: str
    name: str
    data_center: str


@dataclass(frozen=True)
class AudienceInfo:
    id: str
    name: str
    member_count: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.member_count:,} members)"


class MailchimpApi:
    """The calls the extension makes, with retries, a connection cap and our errors.

    Throttling (429, a bodyless 403), server errors (5xx), timeouts and dropped
    connections are retried with exponential backoff and full jitter, at most
    ``MAILCHIMP_SYNC_MAX_RETRIES`` times; every other error is raised at once. No more
    than ``MAILCHIMP_SYNC_MAX_CONNECTIONS`` calls per account are in flight: in this
    process, or in all processes together when Redis is configured (:mod:`.budget`).
    Every error message is written for shop staff and never holds the key.

    :param retries: override the configured number of retries (``0`` for calls staff
        wait on, such as verifying a key).
    """

    def __init__(
        self,
        api_key: str,
        config: Mapping[str, Any],
        *,
        retries: int | None = None,
        on_retry: Callable[[float], None] | None = None,
    ) -> None:
        self._client = build_client(api_key, config)
        #: Told the seconds before each retry, so a run's page can say it waits.
        self._on_retry = on_retry
        self._data_center = data_center(api_key)
        self._slots = budget.slots(api_key, config)
        self._retries = (
            int(config.get("MAILCHIMP_SYNC_MAX_RETRIES", 5)) if retries is None else retries
        )
        self._backoff = float(config.get("MAILCHIMP_SYNC_RETRY_BACKOFF", 0.5))

    # -- account and audiences ---------------------------------------------------------

    def verify(self) -> AccountInfo:
        """Check the key against ``/ping`` and read the account it opens."""
        self._call(self._client.ping.get)
        root = self._call(self._client.root.get, fields="account_id,account_name")
        return AccountInfo(
            id=str(root.get("account_id", "")),
            name=str(root.get("account_name") or "Mailchimp account"),
            data_center=self._data_center,
        )

    def audiences(self) -> list[AudienceInfo]:
        """Every audience of the account, a page of 1,000 at a time."""
        found: list[AudienceInfo] = []
        while True:
            page = self._call(
                self._client.lists.all,
                fields="lists.id,lists.name,lists.stats.member_count,total_items",
                count=1000,
                offset=len(found),
            )
            found += [_audience(item) for item in page.get("lists", [])]
            if not page.get("lists") or len(found) >= int(page.get("total_items", 0)):
                return found

    def audience(self, audience_id: str) -> AudienceInfo:
        """One audience by ID; :class:`AudienceNotFoundError` when the account has none."""
        try:
            return _audience(
                self._call(self._client.lists.get, audience_id, fields="id,name,stats.member_count")
            )
        except MailchimpApiError as error:
            if error.status == 404:
                raise AudienceNotFoundError(audience_id) from None
            raise

    def merge_field_tags(self, audience_id: str) -> set[str]:
        """The merge tags the audience has (FNAME, LNAME, ... as edited in Mailchimp)."""
        page = self._call(
            self._client.lists.merge_fields.all, audience_id, get_all=False, count=1000,
            fields="merge_fields.tag",
        )  # fmt: skip
        return {field["tag"] for field in page.get("merge_fields", [])}

    def merge_fields(self, audience_id: str) -> list[dict[str, Any]]:
        """The audience's merge fields: tag, name and type of each."""
        page = self._call(
            self._client.lists.merge_fields.all, audience_id, get_all=False, count=1000,
            fields="merge_fields.tag,merge_fields.name,merge_fields.type",
        )  # fmt: skip
        return list(page.get("merge_fields", []))

    def add_merge_field(self, audience_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a merge field (``POST /lists/{id}/merge-fields``)."""
        return dict(self._call(self._client.lists.merge_fields.create, audience_id, body))

    # -- members -----------------------------------------------------------------------

    def iter_members(
        self,
        audience_id: str,
        *,
        since: datetime | None = None,
        status: str | None = None,
        page_size: int = 1000,
        first: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Members (of one *status*, else all, archived included), changed since *since*;
        *first*: the first page of the one *status*, read already (:meth:`member_page`)."""
        # Mailchimp lists archived members only when asked for them by status.
        for wanted_status in [status] if status else [None, "archived"]:
            offset = 0
            while True:
                if first is not None and status and offset == 0:
                    page = first
                else:
                    page = self.member_page(
                        audience_id, offset=offset, since=since, status=wanted_status,
                        count=page_size,
                    )  # fmt: skip
                members = page.get("members", [])
                yield from members
                offset += len(members)
                if not members or offset >= int(page.get("total_items", 0)):
                    break

    def member_page(
        self,
        audience_id: str,
        *,
        offset: int = 0,
        since: datetime | None = None,
        status: str | None = None,
        count: int = 1000,
    ) -> dict[str, Any]:
        """One page of :meth:`iter_members`, with ``total_items``."""
        query: dict[str, Any] = {"count": count, "offset": offset, "fields": MEMBER_FIELDS}
        if status:
            query["status"] = status
        if since is not None:
            query["since_last_changed"] = since.isoformat()
        return dict(self._call(self._client.lists.members.all, audience_id, get_all=False, **query))

    def member(self, audience_id: str, member_hash: str) -> dict[str, Any] | None:
        """One member's address and status; ``None`` when the audience has no such member."""
        try:
            return dict(
                self._call(
                    self._client.lists.members.get, audience_id, member_hash,
                    fields="email_address,status",
                )
            )  # fmt: skip
        except MailchimpApiError as error:
            if error.status == 404:
                return None
            raise

    def batch_subscribe(
        self, audience_id: str, members: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], bool]:
        """Add up to 500 new members; existing ones come back as ``ERROR_CONTACT_EXISTS``.

        ``update_existing`` is always false: with it, Mailchimp would set each existing
        member's status to the one sent, and a sync never changes a member's status.
        Returns Mailchimp's answer, and whether an earlier attempt went unanswered (then
        members reported as existing may be ones this very call created).
        """
        body = {"members": members, "update_existing": False}
        unanswered: list[bool] = []
        result = self._call(
            self._client.lists.update_members, audience_id, body, unanswered=unanswered
        )
        return result, bool(unanswered)

    def upsert_member(
        self, audience_id: str, member_hash: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT a member: created with ``status_if_new``; an existing one keeps its status
        unless *body* carries an explicit ``status`` (only to bring back an archive)."""
        return self._call(
            self._client.lists.members.create_or_update, audience_id, member_hash, body
        )

    def change_member(
        self, audience_id: str, member_hash: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PATCH a member (an address change moves it: no duplicate)."""
        return self._call(self._client.lists.members.update, audience_id, member_hash, body)

    def archive_member(self, audience_id: str, member_hash: str) -> bool:
        """Archive (Mailchimp's DELETE); ``False`` when it was already archived or gone.

        A 404 after an attempt that went unanswered is taken as this call's own archive.
        """
        unanswered: list[bool] = []
        try:
            self._call(
                self._client.lists.members.delete, audience_id, member_hash, unanswered=unanswered
            )
        except MailchimpApiError as error:
            if error.status == 404:
                return bool(unanswered)
            raise
        return True

    def set_tags(
        self, audience_id: str, member_hash: str, active: Iterable[str], inactive: Iterable[str]
    ) -> None:
        body = tag_changes(active, inactive)
        self._call(self._client.lists.members.tags.update, audience_id, member_hash, body)

    def webhooks(self, audience_id: str) -> list[dict[str, Any]]:
        return list(self._call(self._client.lists.webhooks.all, audience_id).get("webhooks", []))

    def add_webhook(self, audience_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._client.lists.webhooks.create, audience_id, body)

    def delete_webhook(self, audience_id: str, webhook_id: str) -> None:
        try:
            self._call(self._client.lists.webhooks.delete, audience_id, webhook_id)
        except MailchimpApiError as error:
            if error.status != 404:  # already gone is what we wanted
                raise

    def run_operations(
        self, operations: list[dict[str, Any]], *, poll: float = 0.25, patience: float = 900.0
    ) -> list[tuple[int, dict[str, Any]]]:
        """Carry out many calls as one batch (``/batches``): one request, then polling.

        Returns each operation's HTTP status and JSON reply, in the order given.
        """
        numbered = [dict(op, operation_id=str(n)) for n, op in enumerate(operations)]
        batch = self._call(self._client.batch_operations.create, {"operations": numbered})
        deadline = time.monotonic() + patience
        while batch.get("status") != "finished":
            if time.monotonic() > deadline:
                raise MailchimpUnreachableError(
                    f"Mailchimp did not finish a batch of {len(operations)} changes within "
                    f"{patience:g} seconds; the next run sends what is left."
                )
            time.sleep(poll)
            poll = min(poll * 2, 5.0)
            batch = self._call(self._client.batch_operations.get, batch["id"])
        return batch_results(self._download(batch["response_body_url"]), len(operations))

    def _download(self, url: str) -> bytes:
        try:
            response = requests.get(url, timeout=self._client.timeout)
            response.raise_for_status()
        except requests.RequestException:
            raise MailchimpUnreachableError(
                "The results of a Mailchimp batch could not be downloaded; the next run "
                "checks those changes again."
            ) from None
        return response.content

    # -- the one way every call goes -----------------------------------------------------

    def _call(
        self,
        method: Callable[..., Any],
        *args: Any,
        unanswered: list[bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call with retries. *unanswered* gets ``True`` appended when an attempt got no
        answer (a timeout, a dropped connection): Mailchimp may have done it anyway."""
        attempt = 0
        while True:
            try:
                with self._slots:
                    return method(*args, **kwargs)
            except MailChimpError as error:
                problem: MailchimpApiError = translate_error(error)
                retry = is_transient(problem.status, titled=bool(problem.title))
            except requests.Timeout:
                if unanswered is not None:
                    unanswered.append(True)
                problem = MailchimpUnreachableError(
                    f"Mailchimp did not answer within {self._client.timeout:g} seconds. "
                    "Nothing was changed; try again in a moment."
                )
                retry = True
            except requests.RequestException:
                if unanswered is not None:
                    unanswered.append(True)
                problem = MailchimpUnreachableError(
                    "Mailchimp could not be reached (a network error). Nothing was changed; "
                    "try again in a moment."
                )
                retry = True
            if not retry or attempt >= self._retries:
                raise problem
            delay = backoff_delay(attempt, self._backoff)
            if self._on_retry is not None:
                self._on_retry(delay)
            time.sleep(delay)
            attempt += 1


#: Staff wait on these calls: a slow Mailchimp must not hold the page for long.
STAFF_TIMEOUT = 10.0


def staff_api(api_key: str, config: Mapping[str, Any]) -> MailchimpApi:
    """For calls staff wait on: one attempt, a short timeout; a failure is reported at
    once, and staff try again."""
    config = dict(config)
    config["MAILCHIMP_SYNC_TIMEOUT"] = min(float(config["MAILCHIMP_SYNC_TIMEOUT"]), STAFF_TIMEOUT)
    return MailchimpApi(api_key, config, retries=0)


def tag_changes(active: Iterable[str], inactive: Iterable[str]) -> dict[str, Any]:
    """The body of ``POST .../members/{hash}/tags``: tags to add and to remove."""
    tags = [{"name": t, "status": "active"} for t in sorted(active)]
    tags += [{"name": t, "status": "inactive"} for t in sorted(inactive)]
    return {"tags": tags}


def _audience(item: Mapping[str, Any]) -> AudienceInfo:
    return AudienceInfo(
        id=str(item["id"]),
        name=str(item.get("name", "")),
        member_count=int(item.get("stats", {}).get("member_count", 0)),
    )
