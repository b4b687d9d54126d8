"""Mailchimp's word written into the shop: flags off, addresses and names changed.

The shop's contacts of a member are found through the stored links (so a contact is
found wherever its address is now), through contacts the caller names (a sync's staged
rows), and by address. Writes made here are marked as coming from Mailchimp, so the
real-time hooks do not echo them back as archives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import emails, signals
from .._state import real_app
from . import ledger

if TYPE_CHECKING:
    from ..extension import MailchimpSync

log = logging.getLogger(__name__)

#: Session.info key: this transaction's changes came from Mailchimp (no echo).
FROM_MAILCHIMP = "mailchimp_sync.from_mailchimp"


def quietly(extension: MailchimpSync) -> None:
    """Mark the session's transaction as Mailchimp's: the outbox must not send it back."""
    extension.db.session.info[FROM_MAILCHIMP] = True


def sources_for(extension: MailchimpSync, audience_id: str) -> list[Any]:
    """The sources whose role goes to *audience_id*."""
    settings = extension.settings_store().get()
    if settings is None:
        return []
    roles = {a.role for a in settings.audiences if a.audience_id == audience_id}
    return [s for s in extension.sources if s.role in roles]


def shop_contacts(
    extension: MailchimpSync,
    audience_id: str,
    email: str,
    contacts: Iterable[tuple[str, str]] = (),
) -> Iterator[tuple[Any, Any]]:
    """The shop's contacts (source, model instance) that are this member: linked to it,
    given by the caller (a sync's staged contacts), or having its address now."""
    session = extension.db.session
    Link = extension.models.ContactState
    keys = set(contacts) | ledger.linked_contacts(
        session, Link, audience_id, [emails.subscriber_hash(email)]
    )
    # By key, not id(): an instance read for an earlier source and let go may be freed,
    # and a new one could then take its id.
    seen: set[tuple[str, str | None]] = set()
    for source in sources_for(extension, audience_id):
        linked = (source.get_instance(session, key) for name, key in keys if name == source.name)
        for instance in [*linked, *source.instances_with_email(session, email)]:
            contact = (source.name, None if instance is None else source.key_of(instance))
            if instance is not None and contact not in seen:
                seen.add(contact)
                yield source, instance


def member_state(extension: MailchimpSync, audience_id: str, email: str) -> Any:
    State = extension.models.MemberState
    member_hash = emails.subscriber_hash(email)
    return ledger.member_state(extension.db.session, State, audience_id, member_hash, email)


def withdraw(
    extension: MailchimpSync,
    audience_id: str,
    email: str,
    status: str,
    when: datetime | None = None,
    *,
    contacts: Iterable[tuple[str, str]] = (),
) -> int:
    """Someone unsubscribed or bounced: the shop's flag off, the member's state noted.

    The contacts are those linked to the member (whatever their address is now), those
    given in *contacts* (source name, key), and those with the member's address.
    Returns how many contacts had their flag turned off. The caller commits.
    """
    quietly(extension)
    turned_off = 0
    found = []
    for source, instance in shop_contacts(extension, audience_id, email, contacts):
        turned_off += source.withdraw_consent(instance)
        found.append((source.name, source.key_of(instance)))
    # Consent follows the person: a contact found by its address is that member from now
    # on, so a new address of its does not make it a new subscriber.
    Link, member_hash = extension.models.ContactState, emails.subscriber_hash(email)
    session = extension.db.session
    session.flush()
    ledger.link_unlinked(session, Link, audience_id, member_hash, [c for c in found if c[1]])
    state = member_state(extension, audience_id, email)
    news = state.status != status
    ledger.set_status(state, status, state.email, when=when)
    if news or turned_off:  # read again (windows overlap), it is not news
        signals.unsubscribe_received.send(
            real_app(), audience_id=audience_id, email=email, status=status, contacts=turned_off
        )
    return turned_off


def move_address(extension: MailchimpSync, audience_id: str, old: str, new: str) -> bool:
    """The member changed address in Mailchimp: follow it, unless another contact has it
    now (one last sent as that address but at another one since does not count)."""
    quietly(extension)
    session = extension.db.session
    sources = sources_for(extension, audience_id)
    if any(any(source.instances_with_email(session, new)) for source in sources):
        log.warning("Mailchimp moved a member to an address another shop contact has: left as is")
        return False
    moved = False
    for source, instance in list(shop_contacts(extension, audience_id, old)):
        moved |= source.change_email(instance, new)
    State = extension.models.MemberState
    state = (
        session.query(State)
        .filter_by(audience_id=audience_id, subscriber_hash=emails.subscriber_hash(old))
        .one_or_none()
    )
    if state is not None:
        ledger.rekey(session, State, state, emails.subscriber_hash(new), new)
        Link = extension.models.ContactState
        session.query(Link).filter_by(
            audience_id=audience_id, subscriber_hash=emails.subscriber_hash(old)
        ).update({"subscriber_hash": state.subscriber_hash})
    return moved


def update_names(
    extension: MailchimpSync, audience_id: str, email: str, first: str | None, last: str | None
) -> bool:
    """Names changed in Mailchimp (a profile event), where the source can write them."""
    quietly(extension)
    changed = False
    for source, instance in shop_contacts(extension, audience_id, email):
        changed |= source.change_names(instance, first, last)
    return changed
