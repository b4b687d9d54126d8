"""The only module that talks to Mailchimp.

A client is built per call or per job from the app's config, never at import and never
shared, so each app (and each worker) uses its own settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailchimp3 import MailChimp

from ._version import __version__
from .crypto import data_center

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
