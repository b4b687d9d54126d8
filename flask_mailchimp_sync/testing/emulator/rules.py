"""Mailchimp's rules about addresses, merge fields and statuses."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from . import errors

_EMAIL_SHAPE = re.compile(r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

#: Domains Mailchimp refuses as "fake or invalid": reserved names and throwaway services.
FAKE_DOMAINS = frozenset(
    {
        "example.com", "example.net", "example.org", "test.com", "test.org",
        "mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com",
        "trashmail.com", "tempmail.com", "fake.com", "domain.com", "email.com",
    }
)  # fmt: skip
FAKE_TLDS = frozenset({"test", "example", "invalid", "localhost", "local"})

#: Statuses a member may not be moved to ``subscribed`` from.
COMPLIANCE_STATES = frozenset({"unsubscribed", "cleaned"})


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def email_problem(email: str) -> str | None:
    """Why Mailchimp would refuse *email*, or ``None`` when it is acceptable."""
    if not _EMAIL_SHAPE.match(email):
        return "Please provide a valid email address."
    domain = email.rsplit("@", 1)[1].lower()
    if domain in FAKE_DOMAINS or domain.rsplit(".", 1)[-1] in FAKE_TLDS:
        return f"{email} looks fake or invalid, please enter a real email address."
    return None


def check_email(email: str) -> None:
    problem = email_problem(email)
    if problem is not None:
        raise errors.invalid_resource(problem)


def check_status_change(email: str, old: str, new: str) -> None:
    """Nobody who unsubscribed or bounced is subscribed again without their own opt-in."""
    if new == "subscribed" and old in COMPLIANCE_STATES:
        raise errors.compliance_state(email)


_ADDRESS_PARTS = ("addr1", "city", "state", "zip")


def merge_field_problems(
    values: dict[str, Any], fields: dict[str, dict[str, Any]], *, creating: bool
) -> list[dict[str, str]]:
    """What is wrong with *values* for an audience whose merge fields are *fields*."""
    problems = []
    for tag, value in values.items():
        field = fields.get(tag)
        if field is None:
            problems.append({"field": tag, "message": "This merge field does not exist."})
        elif not _value_fits(field["type"], value):
            message = (
                "Please enter a complete address"
                if field["type"] == "address"
                else "Data did not match any of the schemas described in anyOf."
            )
            problems.append({"field": tag, "message": message})
    if creating:
        for tag, field in fields.items():
            if field["required"] and values.get(tag) in (None, ""):
                problems.append({"field": tag, "message": "Please enter a value"})
    return problems


def check_merge_fields(
    values: dict[str, Any], fields: dict[str, dict[str, Any]], *, creating: bool
) -> None:
    problems = merge_field_problems(values, fields, creating=creating)
    if problems:
        raise errors.invalid_resource("Your merge fields were invalid.", problems)


def _value_fits(kind: str, value: Any) -> bool:
    if kind == "address":
        return value == "" or (
            isinstance(value, dict) and all(str(value.get(k) or "").strip() for k in _ADDRESS_PARTS)
        )
    if kind == "number":
        return value == "" or (isinstance(value, int | float) and not isinstance(value, bool))
    return isinstance(value, str)
