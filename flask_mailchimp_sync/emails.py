"""Email addresses as Mailchimp identifies them: the one identity of an address.

Every comparison of two addresses in the extension goes through :func:`identity`, and
every member id through :func:`subscriber_hash`, which hashes that identity. Contacts
are matched by the identity stored (as its hash) on staged rows, member states and
contact links, never by re-deriving it in SQL: SQL ``trim`` strips spaces only, and
SQLite's ``lower`` knows ASCII only, so ``"ÁLVARO@correo.es\\n"`` would not match.
"""

from __future__ import annotations

import hashlib
import re

# Local part without spaces or the characters no mailbox uses; a dotted domain.
_SHAPE = re.compile(r'^[^\s@"(),:;<>\[\]\\]{1,64}@[^\s@.,;<>"]+(\.[^\s@.,;<>"]+)+$')

MAX_LENGTH = 254


def normalize(email: str | None) -> str | None:
    """The address as sent to Mailchimp: all surrounding whitespace trimmed, the case
    kept; ``None`` when blank."""
    if email is None:
        return None
    email = email.strip()
    return email or None


def identity(email: str | None) -> str | None:
    """What makes two spellings one address: trimmed, then lowercased by the very call
    that lowercases the subscriber hash's input (``str.lower``, not ``casefold``,
    which differs for letters such as ß). ``None`` when blank."""
    trimmed = normalize(email)
    return None if trimmed is None else trimmed.lower()


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lowercased address."""
    return identity_hash(identity(email))


def identity_hash(identity: str | None) -> str:
    """The member id of an address's :func:`identity` (worked out already)."""
    return hashlib.md5((identity or "").encode()).hexdigest()  # Mailchimp's id, not security


def problem(email: str | None) -> str | None:
    """Why *email* cannot be sent (a sentence for the run report), or ``None``."""
    if email is None:
        return "no email address"
    if len(email) > MAX_LENGTH or not _SHAPE.match(email):
        return f"not a valid email address: {email[:MAX_LENGTH]!r}"
    return None


def like_pattern(identity: str) -> str:
    """A SQL ``LIKE`` pattern (escaped with a backslash) matching every spelling of
    *identity*, and more: any character stands for a non-ASCII letter."""
    escaped = identity.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%" + "".join(c if c.isascii() else "_" for c in escaped) + "%"
