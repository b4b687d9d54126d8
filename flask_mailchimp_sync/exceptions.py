"""Every error the extension raises, under one base class.

Messages are full sentences that say what to do, because they end up in a shop
developer's terminal or in front of shop staff. None of them ever contains an API key.
"""

from __future__ import annotations

from werkzeug.exceptions import BadRequest, Forbidden, InternalServerError


class MailchimpSyncError(Exception):
    """Base class of every error raised by flask-mailchimp-sync."""


class ConfigurationError(MailchimpSyncError, RuntimeError):
    """The host app's configuration or registration is incomplete or inconsistent."""


class UnsupportedVersionError(MailchimpSyncError, ImportError):
    """A library the extension needs is older than the oldest version it supports."""


class TablesMissingError(ConfigurationError):
    """The extension's tables (or some of their columns) are not in the database yet."""


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


class ConnectionProblem(MailchimpSyncError):
    """Connecting or choosing audiences failed a check; :attr:`field` says which input
    it concerns (``api_key`` or a role), :attr:`message` what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SyncRefused(MailchimpSyncError):
    """A sync could not start: not connected, no audience chosen, or one is running."""


class MailchimpApiError(MailchimpSyncError):
    """Mailchimp answered a call with an error.

    :attr:`status` is the HTTP status (0 when there was no answer at all), :attr:`title`
    and :attr:`detail` Mailchimp's own words when it gave any.
    """

    def __init__(self, message: str, *, status: int = 0, title: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail


class MailchimpKeyRejectedError(MailchimpApiError):
    """Mailchimp refused the API key (401)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "Mailchimp rejected this API key. Check that it was copied whole and has not been "
            "revoked (Mailchimp: Profile > Extras > API keys).",
            status=401,
            title="API Key Invalid",
            detail=detail,
        )


class MailchimpUnreachableError(MailchimpApiError):
    """No answer from Mailchimp: a timeout or a network failure."""


class AudienceNotFoundError(MailchimpApiError):
    """The account has no audience with the given ID."""

    def __init__(self, audience_id: str) -> None:
        super().__init__(
            f"This Mailchimp account has no audience with the ID {audience_id!r}. Pick one "
            "from the list, or copy the ID from the audience's Settings > Audience name and "
            "defaults page.",
            status=404,
            title="Resource Not Found",
        )
        self.audience_id = audience_id


class AccessNotConfigured(Forbidden):
    """The host registered no authorization check, so the staff pages stay closed."""

    description = (
        "The Mailchimp pages are closed until the app says who may use them. Register a "
        "check with the extension's authorize decorator, e.g. @mailchimp.authorize on a "
        "function that returns True for shop staff (README: 'Protecting the pages')."
    )


class AccessDenied(Forbidden):
    description = "You are not allowed to manage the Mailchimp integration."


class MalformedEvent(BadRequest):
    """A POST to the webhook that is not a Mailchimp event (answered 400)."""

    description = "This is not a Mailchimp webhook event."


class TablesMissing(InternalServerError):
    """The staff page before the extension's tables exist: the fix, not a traceback."""

    def __init__(self, problem: TablesMissingError) -> None:
        super().__init__(description=str(problem))
