"""Outcomes into the shop's records: the ledger (member states, contact links) and the
report of the run or delivery (its counts and its list of skipped, blocked and failed
contacts).

A page is recorded in one go; when the database refuses it (a row written meanwhile by
someone else, a value it will not take), the page is recorded again member by member,
each in a savepoint, and a member that still fails is reported as failed: one bad row
never stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import bounds, signals
from .._state import real_app
from ..models import utcnow
from . import ledger, records, shop
from .members import CREATES, Member, Outcome
from .planner import REFUSED
from .select import Refusal

if TYPE_CHECKING:
    from ..extension import MailchimpSync

log = logging.getLogger(__name__)


class Recorder:
    """Records the outcomes of one run or delivery.

    :param report: the run or delivery row whose counts go up.
    :param owner: the column that ties a listed contact to *report*
        (``{"run_id": 3}`` or ``{"delivery_id": 5}``).
    """

    def __init__(
        self,
        extension: MailchimpSync,
        report: Any,
        owner: Mapping[str, int],
        *,
        dry_run: bool = False,
    ) -> None:
        self.extension = extension
        self.session = extension.db.session
        self.models = extension.models
        self.report = report
        self.owner = dict(owner)
        self.app = real_app()
        self.dry_run = dry_run
        self.links = ledger.Links(self.session, self.models.ContactState)
        self._states: dict[str, Any] = {}
        #: Signals for the host, sent once the page they describe is committed.
        self._signals: list[tuple[Any, dict[str, Any]]] = []

    def record(
        self, audience_id: str, outcomes: Sequence[Outcome], links: ledger.Links | None = None
    ) -> None:
        """Record a page of outcomes (the caller commits).

        :param links: the links read to plan the page (else those :attr:`links` holds).
        """
        if links is not None:
            self.links = links
        snapshot, signalled = self.links.snapshot(), len(self._signals)
        try:
            self._record_page(audience_id, outcomes)
        except Exception:
            log.exception("Recording a page of Mailchimp outcomes failed; member by member now")
            self.session.rollback()
            del self._signals[signalled:]
            self._record_one_by_one(audience_id, outcomes, snapshot)

    def send_signals(self) -> None:
        """Tell the host what the committed pages did (call after the commit)."""
        pending, self._signals = self._signals, []
        for signal, kwargs in pending:
            signal.send(self.app, **kwargs)

    def report_outcome(self, outcome: Outcome) -> None:
        """Count an outcome, and list it when it is skipped, blocked or failed."""
        counted, wanted = outcome.counted, outcome.member.wanted
        if counted == "unchanged" and wanted is not None and not wanted.consent:
            counted = "not_opted_in"  # nobody at this address said yes: nothing was sent
        if outcome.counted in ("blocked", "failed"):
            first = outcome.member.contacts[0] if outcome.member.contacts else None
            self.report_listed(
                outcome.counted,
                outcome.reason,
                email=outcome.member.email,
                source=first.source if first else None,
                contact_key=first.contact_key if first else None,
            )
        else:
            setattr(self.report, counted, getattr(self.report, counted) + 1)

    def report_listed(self, counted: str, reason: str, **where: Any) -> None:
        """Count a blocked or failed member, and list it with its reason."""
        setattr(self.report, counted, getattr(self.report, counted) + 1)
        self.item(counted, reason, **where)

    def list_refused(self, refused: Iterable[Refusal]) -> None:
        """List again the new members Mailchimp refused whose contacts a run left out as
        unchanged, as failed with Mailchimp's words: nothing is planned or sent for
        them (the same data would be refused again)."""
        for member in refused:
            self.report_listed(
                "failed",
                member.reason,
                email=member.email,
                source=member.source,
                contact_key=member.contact_key,
            )

    def item(self, outcome: str, reason: str, **where: Any) -> None:
        # A skipped contact's values are what made it fail: shown, so shortened to fit.
        Item = self.models.SyncRunItem
        shown = bounds.fitted(Item, {"reason": reason, **where})
        self.session.add(Item(outcome=outcome, **self.owner, **shown))

    # -- one page -----------------------------------------------------------------------

    def _record_page(
        self, audience_id: str, outcomes: Sequence[Outcome], *, fresh: bool = False
    ) -> None:
        if not self.dry_run:
            self._prepare_states(audience_id, outcomes, fresh=fresh)
        for outcome in outcomes:
            self._record(audience_id, outcome)
        self.links.write()
        records.write(self.session, self.models.MemberState, self._states.values())
        self._states = {}
        self.session.flush()

    def _record_one_by_one(
        self, audience_id: str, outcomes: Sequence[Outcome], snapshot: dict[Any, Any]
    ) -> None:
        for outcome in outcomes:
            self.links.restore(snapshot)
            signalled = len(self._signals)
            try:
                with self.session.begin_nested():
                    self._record_page(audience_id, [outcome], fresh=True)
                snapshot = self.links.snapshot()
            except Exception as error:
                log.exception("A Mailchimp outcome could not be recorded")
                reason = f"The shop could not record this member ({type(error).__name__})."
                self.links.restore(snapshot)
                del self._signals[signalled:]
                self.report_outcome(Outcome(outcome.member, "failed", reason=reason))

    def _prepare_states(
        self, audience_id: str, outcomes: Sequence[Outcome], *, fresh: bool
    ) -> None:
        """The state records a page's outcomes change (written back in a few statements:
        a page has hundreds): as the page was planned from, or read again (*fresh*)."""
        writing = [o.member for o in outcomes if o.writes_state and not o.moves]
        wanted = {member.hash: member.email for member in writing}
        if fresh:
            State = self.models.MemberState
            self._states = records.read(self.session, State, audience_id, wanted)
        else:
            planned = {member.hash: member.state for member in writing}
            self._states = records.known(audience_id, planned, wanted)

    def _record(self, audience_id: str, outcome: Outcome) -> None:
        member = outcome.member
        self.report_outcome(outcome)
        if self.dry_run:
            return
        if not outcome.writes_state:
            if member.wanted is not None:
                self._link(audience_id, member)
            return
        state = self._state_for(outcome)
        email = member.email
        state.last_error = outcome.reason if outcome.counted == "failed" else None
        if outcome.counted == "failed" and member.wanted is not None and state.status is None:
            state.fingerprint = member.wanted.fingerprint  # remember what was refused
        if outcome.status:
            if outcome.status in REFUSED and state.status != outcome.status:
                self._withdraw(audience_id, outcome)
            ledger.set_status(state, outcome.status, email)
        if outcome.counted == "archived":
            state.archived_by_shop = True
            self._signals.append(
                (signals.member_archived, {"audience_id": audience_id, "email": email})
            )
        elif outcome.counted in ("added", "updated") and member.wanted is not None:
            if member.decision.action in CREATES or member.created:
                state.sent = True  # only members the shop created are ever archived by it
            state.archived_by_shop = False
            state.fingerprint = member.wanted.fingerprint
            state.tags = ",".join(sorted(member.wanted.tags))
            state.synced_at = utcnow()
            self._signals.append(
                (
                    signals.member_upserted,
                    {"audience_id": audience_id, "email": email, "status": outcome.status},
                )
            )
        if member.wanted is not None and outcome.counted != "failed":
            self._link(audience_id, member)

    def _link(self, audience_id: str, member: Member) -> None:
        """Link the member's contacts to it; a person who refused under their old address
        stays linked to that member, whatever came of this one."""
        refused = [c for c in member.contacts if (c.source, c.contact_key) in member.refused]
        others = [c for c in member.contacts if (c.source, c.contact_key) not in member.refused]
        self.links.link(audience_id, member.hash, others, move=True)
        self.links.link(audience_id, member.hash, refused, move=False)

    def _withdraw(self, audience_id: str, outcome: Outcome) -> None:
        """Mailchimp's answer says the member unsubscribed or bounced meanwhile: the
        shop's flags follow, as they would after a webhook."""
        contacts = {(row.source, row.contact_key) for row in outcome.member.contacts}
        email = outcome.member.email
        shop.withdraw(self.extension, audience_id, email, str(outcome.status), contacts=contacts)

    def _state_for(self, outcome: Outcome) -> Any:
        """The member's state as an ORM object, to change."""
        member = outcome.member
        State = self.models.MemberState
        if outcome.moves:
            # The member itself moved: its row follows it to the new address.
            state: Any = self.session.get(State, member.previous.id)
            ledger.rekey(self.session, State, state, member.hash, member.want.email)
        else:
            state = self._states[member.hash]
        if member.wanted is not None:
            state.email = member.wanted.email
        return state
