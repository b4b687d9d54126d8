"""flask-mailchimp-sync: keep a Flask shop's customers and consignors in Mailchimp."""

from __future__ import annotations

from ._state import get_extension
from ._version import __version__
from .exceptions import (
    ConfigurationError,
    InvalidApiKeyError,
    MailchimpSyncError,
    StoredKeyUnreadableError,
)
from .extension import DEFAULT_CONFIG, MailchimpSync
from .logs import RedactSecrets
from .sources import Contact, ContactSource

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigurationError",
    "Contact",
    "ContactSource",
    "InvalidApiKeyError",
    "MailchimpSync",
    "MailchimpSyncError",
    "RedactSecrets",
    "StoredKeyUnreadableError",
    "__version__",
    "get_extension",
]
