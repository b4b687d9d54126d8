"""The only module that talks to Mailchimp.

A client is built per call or per job from the app's config, never at import and never
shared, so each app (and each worker) uses its own settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from mailchimp3 import MailChimp
from mailchimp3.mailchimpclient import MailChimpError

from ._version import __version__
from .crypto import data_center
from .exceptions import (
    AudienceNotFoundError,
    MailchimpApiError,
    MailchimpKeyRejectedError,
    MailchimpUnreachableError,
)

#: Sent with every request, so Mailchimp's logs (and the emulator) can tell our calls apart.
USER_AGENT = f"flask-mailchimp-sync/{__version__}"


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
    """The calls the extension makes, with Mailchimp's failures turned into our errors.

    Every error message is written for shop staff and never contains the API key.
    """

    def __init__(self, api_key: str, config: Mapping[str, Any]) -> None:
        self._client = build_client(api_key, config)
        self._data_center = data_center(api_key)

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

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except MailChimpError as error:
            raise translate_error(error) from None
        except requests.Timeout:
            raise MailchimpUnreachableError(
                f"Mailchimp did not answer within {self._client.timeout:g} seconds. Nothing "
                "was changed; try again in a moment."
            ) from None
        except requests.RequestException:
            raise MailchimpUnreachableError(
                "Mailchimp could not be reached (a network error). Nothing was changed; try "
                "again in a moment."
            ) from None


def translate_error(error: MailChimpError) -> MailchimpApiError:
    """mailchimp3's error (a dict holding the response and the JSON body, if any) as ours."""
    info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    response = info.get("response")
    status = int(info.get("status") or getattr(response, "status_code", 0) or 0)
    title = str(info.get("title") or "")
    detail = str(info.get("detail") or "")
    if status == 401:
        return MailchimpKeyRejectedError(detail)
    if detail:
        message = f"Mailchimp refused the request: {detail}"
    else:
        message = f"Mailchimp answered with an error (HTTP {status}). Try again in a moment."
    return MailchimpApiError(message, status=status, title=title, detail=detail)


def _audience(item: Mapping[str, Any]) -> AudienceInfo:
    return AudienceInfo(
        id=str(item["id"]),
        name=str(item.get("name", "")),
        member_count=int(item.get("stats", {}).get("member_count", 0)),
    )
