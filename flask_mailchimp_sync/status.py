"""A contact's Mailchimp status, for the host's own pages.

Staff see why a flag went off ("Unsubscribed in Mailchimp on 2026-11-26") and do not
tick it back on blindly. The status says what is true now: a change just saved shows
as on its way ("Archiving in Mailchimp…") until its delivery lands, and nothing claims
"Subscribed" while no account is connected.
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


#: What a change waiting in the outbox will do, by what it does to the member.
ON_ITS_WAY = {
    "archive": "Archiving in Mailchimp…",
    "add": "Sending to Mailchimp…",
    "update": "Updating in Mailchimp…",
}
DISCONNECTED = "Not connected: the shop's Mailchimp account is disconnected"


@dataclass(frozen=True)
class MemberStatus:
    status: str | None  # Mailchimp's, or None: never sent
    since: datetime | None = None
    #: A change saved in the shop and not yet in Mailchimp: "archive", "add" or "update".
    pending: str | None = None
    #: Why that change waits (real-time updates off, or before the first Sync).
    waiting: str | None = None
    connected: bool = True

    @property
    def label(self) -> str:
        if not self.connected:
            return DISCONNECTED
        if self.pending is not None:
            if self.waiting:
                return f"{self.known_label} (a change waits for {self.waiting})"
            return ON_ITS_WAY[self.pending]
        return self.known_label

    @property
    def known_label(self) -> str:
        """What Mailchimp was last known to hold."""
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
    settings = extension.settings_store().get()
    if settings is None or not settings.is_connected:
        return MemberStatus(None, connected=False)
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
        status = state.status if state is not None else None
        since = state.status_changed_at if state is not None else None
        pending = _pending(extension, source.name, contact.key, contact.marketing, status)
        if status or pending:
            return MemberStatus(status, since, pending, _waits_for(settings, source.role))
    return MemberStatus(None)


def _pending(
    extension: MailchimpSync, source: str, key: str, marketing: bool, status: str | None
) -> str | None:
    """What the contact's undelivered change will do to its member, if one waits."""
    Outbox = extension.models.Outbox
    waiting = extension.db.session.execute(
        sa.select(Outbox.id)
        .where(Outbox.source == source, Outbox.contact_key == key, Outbox.delivered_at.is_(None))
        .limit(1)
    ).first()
    if waiting is None:
        return None
    live = status in ("subscribed", "pending")
    if not marketing:
        return "archive" if live else None
    if status in (None, "archived"):
        return "add"
    return "update" if live else None  # an unsubscribe stays: nothing to announce


def _waits_for(settings: Any, role: str) -> str | None:
    if not settings.realtime:
        return "the next Sync, as real-time updates are off"
    audience = settings.audience_for(role)
    if audience is None:
        return "an audience to be chosen"
    if audience.first_synced_at is None:
        return "the first Sync"
    return None


def _audiences(extension: MailchimpSync, role: str) -> list[str]:
    settings = extension.settings_store().get()
    return [a.audience_id for a in settings.audiences if a.role == role] if settings else []
