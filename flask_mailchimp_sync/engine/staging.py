"""A run's snapshot of the shop: every contact of the synced roles, checked and staged.

Contacts are streamed from the host's models and written to ``mailchimp_sync_staged``
a chunk at a time, so the database (not memory) groups a person's contacts by address:
memory stays flat however large the shop. Bad data is skipped here, with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import bounds, emails
from ..merge_fields import tag_problem
from ..sources import Contact, ContactSource
from .planner import Wanted

#: Mailchimp's limit for a text merge field.
MAX_FIELD_LENGTH = 255
INSERT_CHUNK = 1000


@dataclass(frozen=True)
class Target:
    """A role synced into an audience, with the tag its members get there."""

    role: str
    audience_id: str
    tag: str
    sources: Sequence[ContactSource]


@dataclass(frozen=True)
class Skipped:
    contact: Contact
    reason: str
    #: "skipped", or "trimmed" for a contact sent with a value cut to fit.
    outcome: str = "skipped"


def contact_fields(contact: Contact) -> dict[str, Any]:
    """The merge fields a contact brings: FNAME, LNAME and its source's extras."""
    fields: dict[str, Any] = {"FNAME": contact.first_name, "LNAME": contact.last_name}
    fields.update(contact.merge_fields)
    return {tag: value for tag, value in fields.items() if value not in (None, "")}


def contact_problem(contact: Contact) -> str | None:
    """Why a contact cannot be sent, or ``None``."""
    problem = emails.problem(emails.normalize(contact.email))
    if problem is not None:
        return problem
    for tag, value in contact_fields(contact).items():
        problem = field_problem(value)
        if problem is not None:
            return f"{tag} {problem}"
    for name in sorted(contact.tags):
        problem = tag_problem(name)
        if problem is not None:
            return problem[:1].upper() + problem[1:]
    return None


def field_problem(value: Any) -> str | None:
    """Why a text merge field cannot hold *value* (to follow its name), or ``None``."""
    if isinstance(value, str) and len(value) > MAX_FIELD_LENGTH:
        return f"is longer than {MAX_FIELD_LENGTH} characters"
    if isinstance(value, str) and any(ord(c) < 32 for c in value):
        return "holds control characters"
    return None


def stage(
    session: Any,
    staged_model: Any,
    run_id: int,
    targets: Iterable[Target],
    *,
    chunk_size: int = 1000,
) -> Iterable[Skipped]:
    """Stage every contact of *targets*; yields the contacts with consent it had to skip.

    Rows go in with Core inserts (nothing kept in the session); the caller commits.
    """
    rows: list[dict[str, Any]] = []
    for target in targets:
        for source in target.sources:
            for contact in source.iter_contacts(session, chunk_size=chunk_size):
                row, problem = checked_row(staged_model, run_id, target, contact)
                if problem is not None:
                    if contact.marketing:  # without consent it would not be sent anyway
                        yield Skipped(contact, problem)
                    continue
                rows.append(row)
                if contact.marketing:
                    yield from (Skipped(contact, note, "trimmed") for note in contact.notes)
                if len(rows) >= INSERT_CHUNK:
                    session.execute(sa.insert(staged_model), rows)
                    rows = []
    if rows:
        session.execute(sa.insert(staged_model), rows)


def checked_row(
    staged_model: Any, run_id: int, target: Target, contact: Contact
) -> tuple[dict[str, Any], str | None]:
    """The contact as a staged row, and why it cannot be sent or stored (or ``None``)."""
    row = staged_row(run_id, target, contact)
    return row, contact_problem(contact) or bounds.problem(staged_model, row)


def staged_row(run_id: int, target: Target, contact: Contact) -> dict[str, Any]:
    """A contact as one row of ``mailchimp_sync_staged`` (a checked contact)."""
    email = emails.normalize(contact.email) or ""
    fields = json.dumps(contact_fields(contact), default=str, sort_keys=True)
    tags = ",".join(sorted(contact.tags))
    return {
        "run_id": run_id,
        "audience_id": target.audience_id,
        "subscriber_hash": emails.subscriber_hash(email),
        "email": email,
        "source": contact.source,
        "contact_key": contact.key,
        "tag": target.tag,
        "marketing": contact.marketing,
        "merge_fields": fields,
        "tags": tags,
        "fingerprint": hashlib.sha256(
            f"{emails.identity(email)}|{contact.marketing}|{target.tag}|{fields}".encode()
            + (f"|{tags}".encode() if tags else b"")  # as before for sources without tags
        ).hexdigest(),
    }


def wanted_member(
    staged_rows: Sequence[Any],
    merge_tags: Mapping[str, Any] | set[str],
    refused: frozenset[tuple[str, str]] = frozenset(),
) -> Wanted:
    """One address's contacts (in registration order) as one member.

    Consent from any contact with the flag on, but those in *refused* (source, key),
    whose person refused under another address; tags (role and computed) of the
    consenting contacts; each
    merge field from the first contact that has it, kept only where the audience has it.
    """
    consenting = [
        row for row in staged_rows if row.marketing and (row.source, row.contact_key) not in refused
    ]
    fields: dict[str, Any] = {}
    for row in consenting or staged_rows:
        for tag, value in json.loads(row.merge_fields).items():
            if tag in merge_tags:
                fields.setdefault(tag, value)
    email = (consenting or staged_rows)[0].email
    return Wanted(
        email=email,
        consent=bool(consenting),
        tags=frozenset(row.tag for row in consenting).union(
            *(_computed_tags(row) for row in consenting)
        ),
        merge_fields=fields,
    )


def _computed_tags(row: Any) -> set[str]:
    return {name for name in (getattr(row, "tags", None) or "").split(",") if name}
