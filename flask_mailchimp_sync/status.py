"""A contact's Mailchimp status, for the host's own pages.

Staff see why a flag went off ("Unsubscribed in Mailchimp on 2026-11-26") and do not
tick it back on blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import emails

if TYPE_CHECKING:
    from .extension import MailchimpSync

LABELS = {
    "subscribed": "Subscribed",
    "pending": "Pending (confirmation email sent)",
    "unsubscribed": "Unsubscribed in Mailchimp",
    "cleaned": "Cleaned in Mailchimp (the address bounced)",
    "archived": "Archived in Mailchimp",
    "transactional": "Transactional only (not subscribed to marketing)",
}


@dataclass(frozen=True)
class MemberStatus:
    status: str | None  # Mailchimp's, or None: never sent
    since: datetime | None = None

    @property
    def label(self) -> str:
        if self.status is None:
            return "Not sent to Mailchimp"
        label = LABELS.get(self.status, self.status)
        if self.since is not None and self.status in ("unsubscribed", "cleaned", "archived"):
            return f"{label} on {self.since:%Y-%m-%d}"
        return label

    def __str__(self) -> str:
        return self.label


def member_status(extension: MailchimpSync, instance: Any) -> MemberStatus:
    sources = [s for s in extension.sources if isinstance(instance, s.model)]
    if not sources:
        return MemberStatus(None)
    session: Any = extension.db.session
    Link, State = extension.models.ContactState, extension.models.MemberState
    identity = sa.inspect(instance).identity
    for source in sources:
        contact = source.get_contact(session, identity[0]) if identity else None
        if contact is None:
            continue
        link = session.execute(
            sa.select(Link).filter_by(source=source.name, contact_key=contact.key)
        ).scalar_one_or_none()
        audience_ids = [link.audience_id] if link else _audiences(extension, source.role)
        address = emails.normalize(contact.email)
        hashes = (
            [link.subscriber_hash]
            if link
            else ([emails.subscriber_hash(address)] if address else [])
        )
        state = session.execute(
            sa.select(State).where(
                State.audience_id.in_(audience_ids), State.subscriber_hash.in_(hashes)
            )
        ).scalar()
        if state is not None and state.status:
            return MemberStatus(state.status, state.status_changed_at)
    return MemberStatus(None)


def _audiences(extension: MailchimpSync, role: str) -> list[str]:
    settings = extension.settings_store().get()
    return [a.audience_id for a in settings.audiences if a.role == role] if settings else []
