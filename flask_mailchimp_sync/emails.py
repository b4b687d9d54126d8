"""Email addresses as Mailchimp identifies them."""

from __future__ import annotations

import hashlib
import re

# Local part without spaces or the characters no mailbox uses; a dotted domain.
_SHAPE = re.compile(r'^[^\s@"(),:;<>\[\]\\]{1,64}@[^\s@.,;<>"]+(\.[^\s@.,;<>"]+)+$')

MAX_LENGTH = 254


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lowercased address."""
    return hashlib.md5(email.lower().encode()).hexdigest()  # Mailchimp's id, not security


def normalize(email: str | None) -> str | None:
    """The address as sent to Mailchimp: trimmed; ``None`` when blank."""
    if email is None:
        return None
    email = email.strip()
    return email or None


def problem(email: str | None) -> str | None:
    """Why *email* cannot be sent (a sentence for the run report), or ``None``."""
    if email is None:
        return "no email address"
    if len(email) > MAX_LENGTH or not _SHAPE.match(email):
        return f"not a valid email address: {email!r}"
    return None
