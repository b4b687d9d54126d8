"""One member of one audience while it is planned, sent and recorded; what came of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .planner import Action, Decision, Known, Wanted

#: Every outcome a run or a delivery counts, in the order the pages show them.
#: ("not opted in": no contact at the address has the marketing flag, so nothing is sent.)
OUTCOMES = (
    "added",
    "updated",
    "archived",
    "unchanged",
    "not_opted_in",
    "blocked",
    "skipped",
    "failed",
)
#: The outcomes listed contact by contact, with a reason.
LISTED = ("skipped", "blocked", "failed")

#: How each planned action counts when it goes as planned.
COUNTED = {
    Action.ADD: "added",
    Action.RESTORE: "added",
    Action.UPDATE: "updated",
    Action.MOVE: "updated",
    Action.ARCHIVE: "archived",
    Action.BLOCKED: "blocked",
    Action.REJECTED: "failed",
    Action.UNCHANGED: "unchanged",
}
#: What the shop does that creates a member: only such members may be archived by it.
CREATES = frozenset({Action.ADD, Action.MOVE, Action.RESTORE})
#: Changes to existing members, sent one by one (or as one batch operation).
ONE_BY_ONE = (Action.UPDATE, Action.MOVE, Action.RESTORE, Action.ARCHIVE)
#: Decisions that need no request.
NO_REQUEST = (Action.UNCHANGED, Action.BLOCKED, Action.REJECTED)


@dataclass
class Member:
    """One address of one audience: the wish, the knowledge, the decision."""

    hash: str
    wanted: Wanted | None
    known: Known | None
    state: Any  # the member's state row (read for planning), or None
    contacts: list[Any] = field(default_factory=list)  # staged rows
    #: The member (state row) a contact of this address was last sent as, when its
    #: address changed since: the person's own member, whose block it keeps.
    previous: Any = None
    #: No contact still has the previous address: its member may move here.
    can_move: bool = False
    #: Contacts (source, key) whose person refused under another address: their
    #: consent does not count here, and they stay linked to that member.
    refused: frozenset[tuple[str, str]] = frozenset()
    #: The shop created this member though the decision became an update: an add
    #: whose first attempt went unanswered was carried out, and its retry found it.
    created: bool = False
    decision: Decision = field(default_factory=lambda: Decision(Action.UNCHANGED))

    @property
    def want(self) -> Wanted:
        """The wish, for members being written (they always have shop contacts)."""
        assert self.wanted is not None
        return self.wanted

    @property
    def changes_tags(self) -> bool:
        return bool(self.decision.add_tags or self.decision.remove_tags)

    @property
    def email(self) -> str:
        if self.wanted is not None:
            return self.wanted.email
        return str(self.state.email) if self.state is not None else ""


@dataclass
class Outcome:
    member: Member
    counted: str  # one of OUTCOMES
    status: str | None = None
    reason: str = ""

    @property
    def writes_state(self) -> bool:
        """Whether it changes what the ledger holds of its member."""
        action = self.member.decision.action
        if action is Action.REJECTED:
            return False  # nothing was sent; the record of the refusal stands
        return not (action is Action.UNCHANGED and self.member.state is not None)

    @property
    def moves(self) -> bool:
        """The member itself moved to the new address (Mailchimp took the change)."""
        return self.member.decision.action is Action.MOVE and self.counted != "failed"


def as_planned(member: Member) -> Outcome:
    """The outcome of a decision that needs no request (or of a preview)."""
    return Outcome(member, COUNTED[member.decision.action], reason=member.decision.reason)
