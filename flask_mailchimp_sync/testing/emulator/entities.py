"""What the emulated Mailchimp's state is made of: accounts, audiences, members and the
connection counters, each as Mailchimp shows it in JSON."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import errors, rules

DEFAULT_MERGE_FIELDS = (
    ("FNAME", "First Name", "text"),
    ("LNAME", "Last Name", "text"),
    ("ADDRESS", "Address", "address"),
    ("PHONE", "Phone Number", "phone"),
    ("BIRTHDAY", "Birthday", "birthday"),
)


#: The options Mailchimp gives a new field of each type.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "text": {"size": 25},
    "date": {"date_format": "MM/DD/YYYY"},
    "birthday": {"date_format": "MM/DD"},
    "phone": {"phone_format": "none"},
    "address": {"default_country": 164},
}


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def timestamp(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time as Mailchimp takes it; a bad one is a 400, not a 500."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise errors.invalid_resource(f"{text!r} is not a valid ISO 8601 time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def hex_id(length: int = 10) -> str:
    return secrets.token_hex(length // 2 + 1)[:length]


@dataclass
class Member:
    email: str
    status: str
    merge_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    archived: bool = False
    email_type: str = "html"
    language: str = ""
    vip: bool = False
    web_id: int = field(default_factory=lambda: secrets.randbelow(10**9))
    unique_email_id: str = field(default_factory=hex_id)
    timestamp_opt: datetime | None = None
    last_changed: datetime = field(default_factory=now)

    @property
    def hash(self) -> str:
        return rules.subscriber_hash(self.email)

    @property
    def visible_status(self) -> str:
        return "archived" if self.archived else self.status

    def as_json(self, list_id: str) -> dict[str, Any]:
        return {
            "id": self.hash,
            "email_address": self.email,
            "unique_email_id": self.unique_email_id,
            "contact_id": self.unique_email_id,
            "full_name": " ".join(
                str(self.merge_fields.get(tag) or "") for tag in ("FNAME", "LNAME")
            ).strip(),
            "web_id": self.web_id,
            "email_type": self.email_type,
            "status": self.visible_status,
            "merge_fields": dict(self.merge_fields),
            "interests": {},
            "language": self.language,
            "vip": self.vip,
            "timestamp_opt": timestamp(self.timestamp_opt),
            "last_changed": timestamp(self.last_changed),
            "source": "API - Generic",
            "tags_count": len(self.tags),
            "tags": [{"id": abs(hash(name)) % 10**6, "name": name} for name in self.tags],
            "list_id": list_id,
        }


@dataclass
class Audience:
    id: str
    name: str
    account_key: str
    members: dict[str, Member] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    merge_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    date_created: datetime = field(default_factory=now)

    def count(self, status: str) -> int:
        return sum(1 for m in self.members.values() if m.visible_status == status)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "web_id": abs(hash(self.id)) % 10**6,
            "name": self.name,
            "date_created": timestamp(self.date_created),
            "double_optin": False,
            "email_type_option": False,
            "visibility": "pub",
            "stats": {
                "member_count": self.count("subscribed"),
                "unsubscribe_count": self.count("unsubscribed"),
                "cleaned_count": self.count("cleaned"),
                "total_contacts": len(self.members),
            },
        }


@dataclass
class Account:
    api_key: str
    account_id: str
    name: str
    email: str

    @property
    def data_center(self) -> str:
        return self.api_key.rsplit("-", 1)[1]

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "login_id": self.account_id[:8],
            "account_name": self.name,
            "email": self.email,
            "username": self.email.split("@")[0],
            "role": "owner",
            "pricing_plan_type": "monthly",
            "account_timezone": "UTC",
            "contact": {"company": self.name, "country": "US"},
        }


@dataclass
class Connections:
    """Simultaneous connections per account key: in flight now, the most at once since
    the last reset, and how many were refused for going over the cap."""

    open: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.peak = Counter(self.open)
        self.refused = Counter()

    def as_json(self) -> dict[str, Any]:
        return {"open": dict(self.open), "peak": dict(self.peak), "refused": dict(self.refused)}
