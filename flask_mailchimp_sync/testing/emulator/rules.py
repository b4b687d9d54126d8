"""Mailchimp's rules about addresses, merge fields and statuses."""

from __future__ import annotations

import datetime
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

#: Mailchimp's words when a value does not fit its field's type. Those for date,
#: birthday, address and a missing required value are as public bug reports quote
#: Mailchimp's answers; the others follow the same style.
TYPE_MESSAGES = {
    "number": "Please enter a number",
    "date": "Please enter the date",
    "birthday": "Please enter a month (01-12) and a day (01-31)",
    "address": "Please enter a complete address",
    "phone": "Please enter a valid phone number",
    "zip": "Please enter a valid zip code",
    "url": "Please enter a valid URL",
    "imageurl": "Please enter a valid URL",
}
#: Mailchimp's answer to a value of a JSON type no merge field takes (true, a list).
NOT_A_VALUE = "Data did not match any of the schemas described in anyOf."


def merge_field_problems(
    values: dict[str, Any], fields: dict[str, dict[str, Any]], *, creating: bool
) -> list[dict[str, str]]:
    """What is wrong with *values* for an audience whose merge fields are *fields*."""
    problems = []
    for tag, value in values.items():
        field = fields.get(tag)
        if field is None:
            problems.append({"field": tag, "message": "This merge field does not exist."})
        elif isinstance(value, bool) or not isinstance(value, str | int | float | dict):
            problems.append({"field": tag, "message": NOT_A_VALUE})
        elif value != "" and not _value_fits(field, value):
            message = TYPE_MESSAGES.get(field["type"], NOT_A_VALUE)
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


def _value_fits(field: dict[str, Any], value: Any) -> bool:
    """Whether a (non-empty) *value* fits *field* as Mailchimp checks it."""
    kind, options = field["type"], field.get("options") or {}
    if kind == "address":
        return isinstance(value, dict) and all(
            str(value.get(k) or "").strip() for k in _ADDRESS_PARTS
        )
    if isinstance(value, dict):
        return False
    if kind == "number":
        return isinstance(value, int | float) or _NUMBER.match(value.strip()) is not None
    if not isinstance(value, str):
        return kind == "text"  # a number in a text field is taken as its text
    text = value.strip()
    if kind == "date":
        return _date(text, str(options.get("date_format") or "MM/DD/YYYY")) is not None
    if kind == "birthday":
        day_first = str(options.get("date_format") or "MM/DD").upper().startswith("DD")
        return _birthday(text, day_first=day_first)
    if kind == "phone":
        if str(options.get("phone_format") or "none") != "US":
            return True
        return len(re.sub(r"[\s().+-]", "", text).removeprefix("1")) == 10 and bool(
            re.fullmatch(r"[\d\s().+-]+", text)
        )
    if kind == "zip":
        return re.fullmatch(r"\d{5}(-\d{4})?", text) is not None
    if kind in ("url", "imageurl"):
        return re.fullmatch(r"(https?://)?[^\s/.]+(\.[^\s/.]+)+(/\S*)?", text) is not None
    return True


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _date(text: str, date_format: str) -> datetime.date | None:
    """A date as Mailchimp reads one: ISO (``YYYY-MM-DD``) or the field's own format."""
    patterns = ["%Y-%m-%d", "%d/%m/%Y" if date_format.upper().startswith("DD") else "%m/%d/%Y"]
    for pattern in patterns:
        try:
            return datetime.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    return None


def _birthday(text: str, *, day_first: bool) -> bool:
    match = re.fullmatch(r"(\d{1,2})/(\d{1,2})", text)
    if match is None:
        return False
    month, day = (int(match[2]), int(match[1])) if day_first else (int(match[1]), int(match[2]))
    return 1 <= month <= 12 and 1 <= day <= 31
