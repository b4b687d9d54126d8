"""The shop's public address, ``MAILCHIMP_SYNC_PUBLIC_URL``, checked as Mailchimp will.

mailchimp3 checks a webhook's URL itself, before sending anything, with a pattern
stricter than browsers: no uppercase letters in the host, no trailing dot, no punycode,
no localhost or private address. :func:`check` runs that very check at ``init_app``, so
a value it would refuse is a configuration error at start-up, not a failure on the staff
page after the audiences were saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mailchimp3.helpers import check_url

from .exceptions import ConfigurationError

#: What a webhook secret looks like (``secrets.token_urlsafe(32)``), to check a full URL.
_SAMPLE_SECRET = "s" * 43


def webhook_url(config: Mapping[str, Any], secret: str) -> str | None:
    """The address Mailchimp calls, with *secret* in it; ``None`` without a public URL."""
    public = config.get("MAILCHIMP_SYNC_PUBLIC_URL")
    if not public:
        return None
    return f"{public.rstrip('/')}{config['MAILCHIMP_SYNC_URL_PREFIX'].rstrip('/')}/webhook/{secret}"


def check(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigurationError` when Mailchimp could not call the webhook URL."""
    url = webhook_url(config, _SAMPLE_SECRET)
    if url is None or _accepted(url):
        return
    public = config["MAILCHIMP_SYNC_PUBLIC_URL"]
    raise ConfigurationError(
        f"MAILCHIMP_SYNC_PUBLIC_URL {public!r} cannot receive Mailchimp's webhooks: "
        f"{_hint(public)}. Correct it, or leave it unset: every sync then reads "
        "unsubscribes from Mailchimp instead."
    )


def _accepted(url: str) -> bool:
    parts = urlsplit(url)
    if parts.query or parts.fragment:  # the webhook's path would end up inside them
        return False
    try:
        check_url(url)
    except ValueError:
        return False
    return True


def _hint(public: str) -> str:
    """What is most likely wrong with *public*, in words a developer can act on."""
    parts = urlsplit(public)
    host = parts.netloc.rpartition("@")[2].partition(":")[0]
    if parts.scheme not in ("https", "http"):
        return "it must start with https://"
    if parts.query or parts.fragment:
        return "it must have no query (?) or fragment (#)"
    if host != host.lower():
        return f"write the host name in lowercase ({host.lower()})"
    if host.endswith("."):
        return f"drop the host name's trailing dot ({host.rstrip('.')})"
    if "xn--" in host:
        return "mailchimp3 refuses punycode host names (xn--...): use one without"
    return (
        "Mailchimp calls only a public host name (with a dot and a top-level domain) or "
        "a public IP address, never localhost or a private network"
    )
