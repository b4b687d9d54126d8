"""How the extension calls Mailchimp politely: which errors are worth retrying and how
long to wait, and how each error is told to staff (in Mailchimp's words, never with the
key). How many calls may be in flight per account is the connection budget's (:mod:`.budget`)."""

from __future__ import annotations

import random

from mailchimp3.mailchimpclient import MailChimpError

from .exceptions import MailchimpApiError, MailchimpKeyRejectedError


def backoff_delay(attempt: int, base: float, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: spreads retries of many workers apart.

    The one backoff of the extension: Mailchimp calls, outbox retries and the
    dispatcher's hand-overs to Redis differ only in *base* and *cap*.
    """
    ceiling = min(cap, base * 2 ** min(attempt, 32))
    return random.uniform(0, ceiling)  # jitter, not cryptography


def is_transient(status: int, *, titled: bool) -> bool:
    """Whether an answer means "try again later" (0: no answer at all).

    A bodyless 403 is Mailchimp's edge throttling; a 403 with a body is a real refusal.
    """
    return status in (429, 0) or status >= 500 or (status == 403 and not titled)


def translate_error(error: MailChimpError) -> MailchimpApiError:
    """mailchimp3's error (a dict holding the response and the JSON body, if any) as ours."""
    info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    response = info.get("response")
    status = int(info.get("status") or getattr(response, "status_code", 0) or 0)
    title = str(info.get("title") or "")
    detail = str(info.get("detail") or "")
    # Which field Mailchimp refused, and why ("CREDIT: Please enter a number"), in its words.
    fields = [
        f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
        for e in info.get("errors") or []
        if isinstance(e, dict) and e.get("message")
    ]
    if fields and detail:
        detail = f"{detail} {'; '.join(fields)}"
    if status == 401:
        return MailchimpKeyRejectedError(detail)
    if status == 429 or status >= 500 or not detail:
        said = f": {detail}" if detail else ""
        message = f"Mailchimp answered with an error (HTTP {status}){said}. Try again in a moment."
    else:
        message = f"Mailchimp refused the request: {detail}"
    return MailchimpApiError(message, status=status, title=title, detail=detail)
