"""How one address's staged contacts become a decided member, with what its contacts
were before their addresses changed: the same for a Sync's pages and for a real-time
delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ledger, staging
from .members import Member
from .planner import decide, refusal


@dataclass(frozen=True)
class History:
    """What the contacts of a page's addresses were before their addresses changed."""

    #: Address -> (the member a contact was last sent as, whether it may move along).
    previous: dict[str, tuple[Any, bool]] = field(default_factory=dict)
    #: Address -> (its contacts whose person refused under another address, that member).
    refused: dict[str, tuple[frozenset[tuple[str, str]], Any]] = field(default_factory=dict)


def plan_member(
    member_hash: str,
    contacts: list[Any],
    state: Any,
    history: History,
    merge_tags: set[str],
    *,
    full: bool = False,
) -> Member:
    """One address's contacts, its state and its history, decided."""
    before, can_move = history.previous.get(member_hash, (None, False))
    refused, refusing = history.refused.get(member_hash, (frozenset(), None))
    wanted = staging.wanted_member(contacts, merge_tags, refused)
    member = Member(member_hash, wanted, ledger.known(state), state, contacts, before, can_move)
    member.refused = refused
    said_no = any(row.marketing for row in contacts if (row.source, row.contact_key) in refused)
    member.decision = decide(
        wanted,
        member.known,
        previous=ledger.known(before),
        can_move=can_move,
        refused=refusal(ledger.known(refusing)) if said_no else None,  # type: ignore[arg-type]
        full=full,
    )
    return member


def departed_member(state: Any) -> Member:
    """A member none of whose contacts is left in the shop."""
    member = Member(state.subscriber_hash, None, ledger.known(state), state)
    member.decision = decide(None, member.known)
    return member
