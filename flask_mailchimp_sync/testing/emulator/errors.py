"""Mailchimp's error responses (``application/problem+json``), as the emulator raises them."""

from __future__ import annotations

import uuid
from typing import Any

ERROR_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"


class ApiError(Exception):
    """An error response: Mailchimp's ``type, title, status, detail, instance`` (+ ``errors``)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_DOC,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": str(uuid.uuid4()),
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def not_found() -> ApiError:
    return ApiError(404, "Resource Not Found", "The requested resource could not be found.")


def invalid_resource(detail: str, errors: list[dict[str, str]] | None = None) -> ApiError:
    return ApiError(400, "Invalid Resource", detail, errors)


def schema_error(errors: list[dict[str, str]]) -> ApiError:
    return invalid_resource(
        "The resource submitted could not be validated. For field-specific details, see "
        "the 'errors' array.",
        errors,
    )


def compliance_state(email: str) -> ApiError:
    return ApiError(
        400,
        "Member In Compliance State",
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review "
        "and cannot be subscribed.",
    )


def forgotten(email: str) -> ApiError:
    return ApiError(
        400,
        "Forgotten Email Not Subscribed",
        f"{email} was permanently deleted and cannot be re-imported. The contact must "
        "re-subscribe to get back on the list.",
    )


def member_exists(email: str) -> ApiError:
    return ApiError(
        400,
        "Member Exists",
        f"{email} is already a list member. Use PUT to insert or update list members.",
    )
