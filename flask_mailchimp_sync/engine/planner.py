"""What should change in Mailchimp for one member, from the shop's wish and what is known.

Pure: no I/O, no clock. The consent rules of the product live here, in one place:

- nobody is subscribed without the shop's marketing flag;
- an existing member's status is never changed, so someone who unsubscribed or was
  cleaned stays so and is reported as blocked;
- only a member the shop itself archived is brought back when the flag is on again;
- a member is archived only when the shop sent them (created them: added, moved or
  restored) and the flag went off (or the contact is gone); people who joined another
  way are never archived, even when the shop later updated their data;
- consent follows the person: a contact whose member is unsubscribed or cleaned keeps
  that block when its address changes (never a new subscription at the new address).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Statuses of members who receive campaigns (or are about to confirm).
ACTIVE = frozenset({"subscribed", "pending"})
#: Statuses by which a person refused the shop's mail: they follow the person.
REFUSED = frozenset({"unsubscribed", "cleaned"})


class Action(enum.Enum):
    ADD = "add"  # new member, through batch subscribe
    UPDATE = "update"  # existing member's data, status untouched (PUT with status_if_new)
    MOVE = "move"  # the contact's address changed: PATCH the old member to the new one
    RESTORE = "restore"  # a member the shop archived comes back (PUT with status)
    ARCHIVE = "archive"  # the flag went off, or the contact is gone
    BLOCKED = "blocked"  # wanted, but Mailchimp holds them unsubscribed/cleaned/...
    REJECTED = "rejected"  # Mailchimp refused this very data before: not sent again
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Wanted:
    """What the shop wants for one address in one audience (its contacts merged)."""

    email: str
    consent: bool
    tags: frozenset[str] = frozenset()
    merge_fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(
            [self.email.lower(), sorted(self.merge_fields.items()), sorted(self.tags)],
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Known:
    """What the shop knows of the member in Mailchimp (``status`` as last seen)."""

    status: str | None
    sent: bool = False
    archived_by_shop: bool = False
    fingerprint: str | None = None
    tags: frozenset[str] = frozenset()
    #: Mailchimp's reason for refusing the data with this fingerprint (never a member).
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    add_tags: frozenset[str] = frozenset()
    remove_tags: frozenset[str] = frozenset()


UNCHANGED = Decision(Action.UNCHANGED)


def decide(
    wanted: Wanted | None,
    known: Known | None,
    *,
    previous: Known | None = None,
    can_move: bool = False,
    refused: str | None = None,
    full: bool = False,
) -> Decision:
    """The one thing to do for a member.

    :param wanted: ``None`` when no shop contact has this address any more. The consent
        of contacts whose person refused under another address is not in it.
    :param previous: what is known of the member a consenting contact of this address
        was last sent as, when its address changed since (the person's own member).
    :param can_move: no contact still has the previous address, so its member may move.
    :param refused: why a contact's consent was left out: its person unsubscribed or
        bounced under the address it had before (consent follows the person).
    :param full: resend data even when it looks unchanged.
    """
    if wanted is None or not wanted.consent:
        if refused is not None and (known is None or known.status is None):
            return Decision(Action.BLOCKED, refused)  # a new address is not a new yes
        return _without_consent(known)
    if known is None or known.status is None:
        if (
            known is not None
            and known.error
            and known.fingerprint == wanted.fingerprint
            and not full
        ):
            # Refusals such as "looks fake" are final for the same data; retrying each
            # sync would only repeat them. A change to the contact, or --full, tries again.
            return Decision(Action.REJECTED, known.error)
        if can_move and previous is not None and previous.sent and previous.status in ACTIVE:
            return _with_tags(Action.MOVE, wanted, previous)
        return Decision(Action.ADD, add_tags=wanted.tags)
    if known.status == "archived":
        if known.archived_by_shop:
            return _with_tags(Action.RESTORE, wanted, known)
        return Decision(Action.BLOCKED, "archived in Mailchimp")
    if known.status not in ACTIVE:
        return Decision(Action.BLOCKED, _blocked_reason(known.status))
    if full or wanted.fingerprint != known.fingerprint:
        return _with_tags(Action.UPDATE, wanted, known)
    return UNCHANGED


def blocked_by(status: str) -> Decision | None:
    """A member Mailchimp answered with, when its status keeps it from campaigns."""
    if status in ACTIVE:
        return None
    return Decision(Action.BLOCKED, _blocked_reason(status))


def refusal(known: Known) -> str:
    """Why a person's consent does not follow them to a new address."""
    return f"{_blocked_reason(str(known.status))} (before the address changed)"


def blocks(known: Known | None) -> bool:
    """Whether the member's person may have said no: unsubscribed, cleaned (bounced), or
    archived by someone else, which hides the status it had (an unsubscribe, perhaps),
    so in doubt it counts as one."""
    if known is None:
        return False
    return known.status in REFUSED or (known.status == "archived" and not known.archived_by_shop)


def _without_consent(known: Known | None) -> Decision:
    if known is not None and known.sent and known.status in ACTIVE:
        return Decision(Action.ARCHIVE)
    return UNCHANGED


def _with_tags(action: Action, wanted: Wanted, known: Known) -> Decision:
    return Decision(action, add_tags=wanted.tags - known.tags, remove_tags=known.tags - wanted.tags)


def _blocked_reason(status: str) -> str:
    return {
        "unsubscribed": "unsubscribed in Mailchimp",
        "cleaned": "cleaned in Mailchimp (the address bounced)",
        "transactional": "transactional in Mailchimp (not subscribed to marketing)",
    }.get(status, f"{status} in Mailchimp")
