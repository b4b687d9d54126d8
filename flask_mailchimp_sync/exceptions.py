"""Every error the extension raises, under one base class.

Messages are full sentences that say what to do, because they end up in a shop
developer's terminal or in front of shop staff. None of them ever contains an API key.
"""

from __future__ import annotations


class MailchimpSyncError(Exception):
    """Base class of every error raised by flask-mailchimp-sync."""


class ConfigurationError(MailchimpSyncError, RuntimeError):
    """The host app's configuration or registration is incomplete or inconsistent."""


class InvalidApiKeyError(MailchimpSyncError, ValueError):
    """A string does not have the shape of a Mailchimp API key.

    Raised before any network call, so a typo never reaches Mailchimp.
    """

    def __init__(self) -> None:
        super().__init__(
            "That is not a Mailchimp API key: a key is 32 hexadecimal characters, a dash "
            "and the data center, like a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6-us6. Copy it from "
            "Mailchimp under Profile > Extras > API keys."
        )


class StoredKeyUnreadableError(ConfigurationError):
    """The stored API key cannot be decrypted with the current secret."""

    def __init__(self) -> None:
        super().__init__(
            "The stored Mailchimp API key cannot be decrypted: SECRET_KEY or "
            "MAILCHIMP_SYNC_ENCRYPTION_KEY changed since it was saved. Restore the old "
            "secret, or connect the Mailchimp account again."
        )
