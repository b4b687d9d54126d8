"""flask-mailchimp-sync: keep a Flask shop's customers and consignors in Mailchimp."""

from __future__ import annotations

from ._state import get_extension
from ._version import __version__
from .exceptions import (
    AccessDenied,
    AccessNotConfigured,
    AudienceNotFoundError,
    ConfigurationError,
    ConnectionProblem,
    InvalidApiKeyError,
    MailchimpApiError,
    MailchimpKeyRejectedError,
    MailchimpSyncError,
    MailchimpUnreachableError,
    MalformedEvent,
    StoredKeyUnreadableError,
    SyncRefused,
)
from .extension import DEFAULT_CONFIG, MailchimpSync
from .logs import RedactSecrets
from .sources import Contact, ContactSource

__all__ = [
    "DEFAULT_CONFIG",
    "AccessDenied",
    "AccessNotConfigured",
    "AudienceNotFoundError",
    "ConfigurationError",
    "ConnectionProblem",
    "Contact",
    "ContactSource",
    "InvalidApiKeyError",
    "MailchimpApiError",
    "MailchimpKeyRejectedError",
    "MailchimpSync",
    "MailchimpSyncError",
    "MailchimpUnreachableError",
    "MalformedEvent",
    "RedactSecrets",
    "StoredKeyUnreadableError",
    "SyncRefused",
    "__version__",
    "get_extension",
]
