"""flask-mailchimp-sync: keep a Flask shop's customers and consignors in Mailchimp."""

from __future__ import annotations

from ._compat import check_versions

check_versions()  # a clear message, before an older SQLAlchemy fails obscurely below

# ruff: noqa: E402 (the check above must come first)
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
    TablesMissingError,
    UnsupportedVersionError,
)
from .extension import DEFAULT_CONFIG, MailchimpSync
from .logs import RedactSecrets
from .merge_fields import MergeField
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
    "MergeField",
    "RedactSecrets",
    "StoredKeyUnreadableError",
    "SyncRefused",
    "TablesMissingError",
    "UnsupportedVersionError",
    "__version__",
    "get_extension",
]
