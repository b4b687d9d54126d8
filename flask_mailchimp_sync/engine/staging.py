"""A run's snapshot of the shop: every contact of the synced roles, checked and staged.

Contacts are streamed from the host's models and written to ``mailchimp_sync_staged``
a chunk at a time, so the database (not memory) groups a person's contacts by address:
memory stays flat however large the shop. A resync stages only the contacts that changed
since they were last handled. Bad data is skipped here, with a reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import bounds, emails, many
from ..merge_fields import fields_added, tag_problem
from ..models import ABSENT, DEFAULT_STORE
from ..sources import Contact, ContactSource
from . import ledger
from .planner import Wanted
from .read_ahead import LinkReading, LinksByKey, link_reader

#: Mailchimp's limit for a text merge field.
MAX_FIELD_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f]")
#: How merge fields are written (and fingerprinted): one encoder, not one per contact.
_FIELDS_JSON = json.JSONEncoder(default=str, sort_keys=True).encode
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
    if isinstance(value, str) and _CONTROL.search(value):
        return "holds control characters"
    return None


class Snapshot:
    """A run's snapshot of the shop, staged in ``mailchimp_sync_staged``.

    Every contact of the targets is read and checked; a contact with the marketing flag
    whose link (the member it was last sent as) says it is unchanged since is left out
    when *changed_only*, so a resync writes little more than what changed (contacts
    without the flag are staged: they tell which addresses nobody opted in at). The
    contacts left out are still there: their links stand for them (see :mod:`.select`),
    and :meth:`add_companions` stages the ones an address being handled needs. A linked
    contact that is not sendable any more (its address became invalid, or it was
    deleted) is staged as a mark (:data:`ABSENT`), so its link no longer stands for it.
    """

    def __init__(
        self,
        session: Any,
        models: Any,
        run_id: int,
        targets: Sequence[Target],
        *,
        chunk_size: int = 1000,
        changed_only: bool = True,
        read_ahead: bool = True,
    ) -> None:
        self.session = session
        self.Staged = models.StagedContact
        self.Link = models.ContactState
        self.run_id = run_id
        self.targets = list(targets)
        self.chunk_size = chunk_size
        self.changed_only = changed_only
        self.read_ahead = read_ahead
        #: Contacts left out because their links say they are unchanged.
        self.unchanged = 0
        #: Some contact read again by :meth:`add_companions` had left its member since.
        self.companions_moved = False
        self._rows: list[dict[str, Any]] = []

    @property
    def sources(self) -> set[str]:
        """The names of the sources the snapshot covers."""
        return {source.name for target in self.targets for source in target.sources}

    def take(self) -> Iterator[Skipped]:
        """Stage every contact; yields the contacts with consent it had to skip.

        A chunk's links are read while the chunk before is checked (see
        :mod:`.read_ahead`). Rows go in with Core inserts (nothing kept in the
        session); the caller commits.
        """
        with link_reader(self.session, self.Link, ahead=self.read_ahead) as read_links:
            for target in self.targets:
                for source in target.sources:
                    linked = yield from self._stage_source(target, source, read_links)
                    self._mark_deleted(source, linked)
        self._write()

    def _stage_source(
        self, target: Target, source: ContactSource, read_links: LinkReading
    ) -> Generator[Skipped, None, int]:
        """Stage one source, each chunk's links read while the chunk before is checked;
        returns how many of its contacts have a link."""
        linked = 0
        checking: tuple[list[Contact], Future[LinksByKey]] | None = None
        for chunk in source.iter_chunks(self.session, chunk_size=self.chunk_size):
            if not chunk:
                continue
            reading = read_links(source.name, [contact.key for contact in chunk])
            if checking is not None:
                linked += yield from self._stage_chunk(target, *checking)
            checking = (chunk, reading)
        if checking is not None:
            linked += yield from self._stage_chunk(target, *checking)
        return linked

    def add_companions(self, contacts: Iterable[tuple[str, str]], hashes: set[str]) -> None:
        """Stage these unchanged contacts (source name, key) of the addresses *hashes*,
        read again from the shop: an address being handled needs all of its contacts.
        One changed since it was left out (deleted, moved) sets :attr:`companions_moved`.
        """
        keys: dict[str, list[str]] = {}
        for name, key in contacts:
            keys.setdefault(name, []).append(key)
        for target in self.targets:
            for source in target.sources:
                wanted = keys.get(source.name)
                if not wanted:
                    continue
                found = source.contacts_by_keys(self.session, wanted)
                for contact in found:
                    row, problem = checked_row(self.Staged, self.run_id, target, contact)
                    self._add(absent_row(self.run_id, contact) if problem else row)
                    self.companions_moved |= bool(problem) or row["subscriber_hash"] not in hashes
                for key in sorted(set(wanted) - {contact.key for contact in found}):
                    self._add(_mark(self.run_id, source.name, key))  # deleted meanwhile
                    self.companions_moved = True
        self._write()

    def _stage_chunk(
        self, target: Target, contacts: list[Contact], reading: Future[LinksByKey]
    ) -> Generator[Skipped, None, int]:
        """Stage a chunk of one source's contacts; returns how many of them have a link."""
        links = reading.result()
        for contact in contacts:
            row = staged_row(self.run_id, target, contact)
            link = links.get(contact.key)
            if self.changed_only and link == (
                target.audience_id,
                row["subscriber_hash"],
                row["fingerprint"],
            ):
                # Handled as it is now, so its data passed these very checks then.
                if contact.marketing:
                    self.unchanged += 1
                else:  # staged all the same: it tells an address nobody opted in at
                    self._add(row)
                continue
            problem = contact_problem(contact) or bounds.problem(self.Staged, row)
            if problem is None:
                self._add(row)
                if contact.marketing:  # sent, with a value cut to fit
                    yield from (Skipped(contact, note, "trimmed") for note in contact.notes)
                continue
            if contact.marketing:  # without consent it would not be sent anyway
                yield Skipped(contact, problem)
            if link is not None:
                self._add(absent_row(self.run_id, contact))
        return len(links)

    def _mark_deleted(self, source: ContactSource, linked: int) -> None:
        """Mark the linked contacts of *source* the shop no longer has.

        Counting is enough to know there are none (each contact has one link at most);
        only then are the links looked at, a page at a time.
        """
        Link = self.Link
        mine = sa.and_(Link.store == DEFAULT_STORE, Link.source == source.name)
        total = self.session.execute(sa.select(sa.func.count()).where(mine)).scalar() or 0
        if total <= linked:
            return
        last_id = 0
        while True:
            page = self.session.execute(
                sa.select(Link.id, Link.contact_key)
                .where(mine, Link.id > last_id)
                .order_by(Link.id)
                .limit(INSERT_CHUNK)
            ).all()
            if not page:
                return
            last_id = page[-1].id
            keys = [row.contact_key for row in page]
            still = source.existing_keys(self.session, keys)
            for key in keys:
                if key not in still:
                    self._add(_mark(self.run_id, source.name, key))

    def _add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= INSERT_CHUNK:
            self._write()

    def _write(self) -> None:
        many.insert(self.session, self.Staged.__table__, self._rows)
        self._rows = []


def absent_row(run_id: int, contact: Contact) -> dict[str, Any]:
    return _mark(run_id, contact.source, contact.key)


def _mark(run_id: int, source: str, key: str) -> dict[str, Any]:
    """A staged row saying the linked contact *key* is not in the snapshot."""
    return {
        "run_id": run_id, "audience_id": ABSENT, "subscriber_hash": "", "email": "",
        "source": source, "contact_key": key, "tag": "", "marketing": False,
        "merge_fields": "{}", "tags": "", "fingerprint": "",
    }  # fmt: skip


def checked_row(
    staged_model: Any, run_id: int, target: Target, contact: Contact
) -> tuple[dict[str, Any], str | None]:
    """The contact as a staged row, and why it cannot be sent or stored (or ``None``)."""
    row = staged_row(run_id, target, contact)
    return row, contact_problem(contact) or bounds.problem(staged_model, row)


def staged_row(run_id: int, target: Target, contact: Contact) -> dict[str, Any]:
    """A contact as one row of ``mailchimp_sync_staged`` (a checked contact)."""
    email = emails.normalize(contact.email) or ""
    identity = emails.identity(email)
    fields = _FIELDS_JSON(contact_fields(contact))
    tags = ",".join(sorted(contact.tags)) if contact.tags else ""
    fingerprint = f"{identity}|{contact.marketing}|{target.tag}|{fields}"
    if tags:  # as before for sources without tags
        fingerprint += f"|{tags}"
    return {
        "run_id": run_id,
        "audience_id": target.audience_id,
        "subscriber_hash": emails.identity_hash(identity),
        "email": email,
        "source": contact.source,
        "contact_key": contact.key,
        "tag": target.tag,
        "marketing": contact.marketing,
        "merge_fields": fields,
        "tags": tags,
        "fingerprint": hashlib.sha256(fingerprint.encode()).hexdigest(),
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


def declared_tags(targets: Iterable[Target], audience_id: str) -> set[str]:
    """The merge tags the audience's sources declare (typed fields)."""
    return {tag for t in targets if t.audience_id == audience_id
            for s in t.sources for tag in s.declared}  # fmt: skip


def resend_where_fields_added(
    session: Any,
    models: Any,
    targets: Sequence[Target],
    audiences: list[Any],
    tags: dict[str, set[str]],
) -> None:
    """An audience that gained a declared field since the last Sync (created in Mailchimp
    by staff): every contact of it counts as changed, so members already there get it."""
    gained = {
        chosen.audience_id
        for chosen in audiences
        if fields_added(
            declared_tags(targets, chosen.audience_id),
            chosen.merge_tags,
            tags.get(chosen.audience_id, set()),
        )
    }
    for audience_id in sorted(gained):  # once, however many roles share the audience
        ledger.forget_fingerprints(session, models.ContactState, audience_id)
