"""Typed merge fields and computed tags: what a host declares, and how values are sent.

A host declares a merge field with :class:`MergeField`: the field's name in Mailchimp,
one of Mailchimp's types and where its value comes from (an attribute name or dotted
path, a SQL expression, or a callable, as for the other fields of a source)::

    merge_fields={
        "CREDIT": MergeField("Store credit", "number", lambda c: c.credit_cents / 100),
        "LASTPAID": MergeField("Last payout", "date", "last_payout_on"),
    }

Values are formatted for their type before they are sent (:func:`formatted`); a value
that still does not fit is sent as it is, and Mailchimp's refusal becomes that
contact's failure, in Mailchimp's words. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

#: Mailchimp's merge field types a declaration may use.
TYPES = ("text", "number", "date", "birthday", "phone", "address", "zip", "url")
#: Mailchimp's limit for a text merge field's value.
TEXT_LIMIT = 255
#: Mailchimp's limits for a merge tag and for a merge field's name.
TAG_LIMIT = 10
NAME_LIMIT = 50
#: Mailchimp caps a tag name at 100 characters.
TAG_NAME_LIMIT = 100

_TAG_SHAPE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class MergeField:
    """A merge field the shop fills: its *name* in Mailchimp, its *type* (one of
    :data:`TYPES`) and its *value*: an attribute name (dotted to follow relationships),
    a SQL expression or a callable taking the contact's model instance."""

    name: str
    type: str
    value: Any

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(
                f"{self.type!r} is not a Mailchimp merge field type; use one of {', '.join(TYPES)}."
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("A merge field needs a name, such as 'Store credit'.")
        if len(self.name) > NAME_LIMIT:
            raise ValueError(
                f"Mailchimp names a merge field in at most {NAME_LIMIT} characters; "
                f"{self.name[:20]!r}... has {len(self.name)}."
            )
        if self.value is None:
            raise ValueError(f"The merge field {self.name!r} needs a value to read.")

    def create_body(self, tag: str) -> dict[str, Any]:
        """The body of ``POST /lists/{id}/merge-fields`` that creates this field."""
        return {"tag": tag, "name": self.name, "type": self.type, "required": False}


def check_tag(tag: str) -> str:
    """*tag* if Mailchimp can have it as a merge tag; else a clear :class:`ValueError`."""
    if not isinstance(tag, str) or len(tag) > TAG_LIMIT or not _TAG_SHAPE.match(tag):
        raise ValueError(
            f"{tag!r} cannot be a Mailchimp merge tag: use at most {TAG_LIMIT} capital "
            "letters, digits and underscores, starting with a letter (such as 'CREDIT')."
        )
    return tag


def formatted(kind: str, value: Any) -> tuple[Any, str | None]:
    """*value* as Mailchimp takes a field of type *kind*, and a note when it was cut.

    Numbers go as JSON numbers, dates as ``YYYY-MM-DD``, birthdays as ``MM/DD``, an
    address as its object; text is cut to Mailchimp's limit. What cannot be formatted
    goes as it is, for Mailchimp to refuse in its own words. ``None`` means "no value".
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if kind == "number":
        return _number(value), None
    if kind in ("date", "birthday") and isinstance(value, dt.date):
        day = value.date() if isinstance(value, dt.datetime) else value
        return (day.isoformat() if kind == "date" else day.strftime("%m/%d")), None
    if kind == "address" and isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}, None
    text = value.strip() if isinstance(value, str) else str(value)
    if kind == "text" and len(text) > TEXT_LIMIT:
        return text[:TEXT_LIMIT], f"was cut to Mailchimp's limit of {TEXT_LIMIT} characters"
    return text, None


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value)  # not a number: Mailchimp says so
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value == int(value) else float(value)
    if isinstance(value, str):
        try:
            return _number(Decimal(value.strip()))
        except ArithmeticError:
            return value.strip()
    return str(value)


def tag_names(value: Any) -> frozenset[str]:
    """A computed tags callable's answer as tag names (blank names left out)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    return frozenset(str(name).strip() for name in value if str(name).strip())


def tag_problem(name: str) -> str | None:
    """Why the shop cannot set tag *name*, or ``None``."""
    if len(name) > TAG_NAME_LIMIT:
        return f"the tag {name[:30]!r}... is longer than Mailchimp's {TAG_NAME_LIMIT} characters"
    if "," in name:
        return f"the tag {name!r} has a comma, which the shop cannot keep apart"
    return None


def missing_note(audience: str, missing: Iterable[str]) -> str | None:
    """What a run says when its audience lacks declared fields (``None`` if none)."""
    tags = sorted(missing)
    if not tags:
        return None
    return (
        f"The audience {audience} has no merge field {', '.join(tags)}: those values were "
        "not sent. Create the missing fields on the Mailchimp page (Fields) or with "
        "`flask mailchimp fields --create`, then sync again."
    )


def fields_added(declared: Iterable[str], cached: str | None, now: Iterable[str]) -> bool:
    """Whether the audience has a declared field now that it lacked at the last Sync
    (*cached*: its merge tags then; ``None`` before the first Sync, which sends all)."""
    return cached is not None and bool(set(declared) & set(now) - set(cached.split(",")))
