"""The declared merge fields against what each chosen audience has, and creating the
missing ones: the page's Fields section and ``flask mailchimp fields`` (``--create``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from .client import MailchimpApi, staff_api
from .engine import ledger
from .exceptions import MailchimpSyncError, SyncRefused
from .merge_fields import MergeField

if TYPE_CHECKING:
    from .extension import MailchimpSync

PRESENT, MISSING, OTHER_TYPE = "present", "missing", "other type"


@dataclass(frozen=True)
class FieldState:
    tag: str
    declared: MergeField
    #: present, missing or other type
    state: str
    #: The type the audience's field has, when it has one.
    found_type: str | None = None


@dataclass
class AudienceFields:
    audience_id: str
    name: str
    roles: list[str]
    fields: list[FieldState] = field(default_factory=list)
    #: Why the audience's fields could not be read, if they could not.
    problem: str | None = None

    @property
    def missing(self) -> list[FieldState]:
        return [f for f in self.fields if f.state == MISSING]


def declared_by_audience(extension: MailchimpSync, settings: Any) -> dict[str, dict[str, Any]]:
    """Each chosen audience: its name, its roles and the fields their sources declare."""
    found: dict[str, dict[str, Any]] = {}
    for chosen in settings.audiences:
        entry = found.setdefault(
            chosen.audience_id,
            {"name": chosen.audience_name or chosen.audience_id, "roles": [], "declared": {}},
        )
        entry["roles"].append(chosen.role)
        for source in extension.sources_for(chosen.role):
            for tag, declared in source.declared.items():
                entry["declared"].setdefault(tag, declared)
    return {audience: entry for audience, entry in found.items() if entry["declared"]}


def report(extension: MailchimpSync) -> list[AudienceFields]:
    """Each chosen audience with declared fields, and the state of each field there.

    An audience whose fields cannot be read says why; the others are still reported.
    """
    settings, api = _connected(extension)
    audiences = []
    for audience_id, entry in declared_by_audience(extension, settings).items():
        audience = AudienceFields(audience_id, entry["name"], entry["roles"])
        try:
            types = {f["tag"]: f.get("type") for f in api.merge_fields(audience_id)}
        except MailchimpSyncError as problem:
            audience.problem = str(problem)
            audiences.append(audience)
            continue
        for tag, declared in entry["declared"].items():
            if tag not in types:
                audience.fields.append(FieldState(tag, declared, MISSING))
            elif types[tag] != declared.type:
                audience.fields.append(FieldState(tag, declared, OTHER_TYPE, types[tag]))
            else:
                audience.fields.append(FieldState(tag, declared, PRESENT, types[tag]))
        audiences.append(audience)
    return audiences


def create_missing(extension: MailchimpSync) -> list[tuple[AudienceFields, str]]:
    """Create every missing declared field, with its type and name, in each chosen
    audience; returns (audience, tag) for each created. A field present with another
    type is left alone: changing it is staff's decision in Mailchimp."""
    settings, api = _connected(extension)
    created = []
    for audience in report(extension):
        if audience.problem is not None:
            raise MailchimpSyncError(audience.problem)
        for n, missing in enumerate(audience.missing):
            api.add_merge_field(audience.audience_id, missing.declared.create_body(missing.tag))
            created.append((audience, missing.tag))
            _remember(settings, audience.audience_id, missing.tag)
            if n == 0:  # contacts already sent have a value for it: the next Sync sends it
                ledger.forget_fingerprints(
                    extension.db.session, extension.models.ContactState, audience.audience_id
                )
            extension.db.session.commit()
    return created


def _remember(settings: Any, audience_id: str, tag: str) -> None:
    """Add *tag* to the merge tags real-time deliveries use (cached by the last Sync),
    so they send the new field without waiting for the next Sync."""
    for chosen in settings.audiences:
        if chosen.audience_id == audience_id and chosen.merge_tags is not None:
            chosen.merge_tags = ",".join(sorted({*chosen.merge_tags.split(","), tag} - {""}))


def _connected(extension: MailchimpSync) -> tuple[Any, MailchimpApi]:
    store = extension.settings_store()
    settings, api_key = store.get(), store.api_key()
    if settings is None or api_key is None:
        raise SyncRefused("Connect a Mailchimp account first.")
    # Staff wait on these calls (the page, the CLI): one attempt, a short timeout.
    return settings, staff_api(api_key, current_app.config)
