"""Decisions out as Mailchimp requests, Mailchimp's answers in as outcomes.

New members go by batch subscribe (``update_existing`` false, so no existing member's
status can change); changes to existing members one by one when few (at most
``MAILCHIMP_SYNC_MAX_CONNECTIONS`` at once), else as one batch operation. An odd answer
about one member is that member's failure, never the end of the run; only Mailchimp
being unavailable (after the client's retries) stops it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import emails
from ..call_policy import is_transient
from ..client import MailchimpApi, tag_changes
from ..exceptions import MailchimpApiError
from .members import COUNTED, NO_REQUEST, ONE_BY_ONE, Member, Outcome, as_planned
from .planner import Action, Decision, blocked_by

log = logging.getLogger(__name__)


class Sender:
    """Sends one audience's decided members; returns an outcome for each."""

    def __init__(
        self,
        api: MailchimpApi,
        config: Mapping[str, Any],
        new_status: str,
        *,
        batch_threshold: int | None = None,
    ) -> None:
        """:param batch_threshold: above this many changes to existing members, send
        them as one batch operation (default: ``MAILCHIMP_SYNC_BATCH_THRESHOLD``)."""
        self.api = api
        #: ``pending`` with double opt-in (new members confirm by email), else subscribed.
        self.new_status = new_status
        self.batch_threshold = (
            int(config["MAILCHIMP_SYNC_BATCH_THRESHOLD"])
            if batch_threshold is None
            else batch_threshold
        )
        self.workers = max(1, min(int(config["MAILCHIMP_SYNC_MAX_CONNECTIONS"]), 10))

    def send(self, audience_id: str, members: list[Member]) -> list[Outcome]:
        outcomes = [as_planned(m) for m in members if m.decision.action in NO_REQUEST]
        adds = [m for m in members if m.decision.action is Action.ADD]
        singles = [m for m in members if m.decision.action in ONE_BY_ONE]
        if adds:
            added, existing = self._batch_add(audience_id, adds)
            outcomes += added
            for member in existing:  # already in Mailchimp: update, never resubscribe
                member.decision = Decision(Action.UPDATE, add_tags=member.want.tags)
            singles += existing
        return outcomes + self._send_singles(audience_id, singles)

    # -- new members ----------------------------------------------------------------

    def _batch_add(
        self, audience_id: str, members: list[Member]
    ) -> tuple[list[Outcome], list[Member]]:
        """Batch subscribe; returns the outcomes and the members that already existed."""
        body = [
            {
                "email_address": m.want.email,
                "status": self.new_status,
                "merge_fields": dict(m.want.merge_fields),
                "tags": sorted(m.want.tags),
            }
            for m in members
        ]
        try:
            result, maybe_ours = self.api.batch_subscribe(audience_id, body)
        except MailchimpApiError as error:
            if is_transient(error.status, titled=bool(error.title)):
                raise
            # The batch as a whole was refused: one by one (PUT with status_if_new)
            # finds the member at fault and adds the others.
            log.warning("Mailchimp refused a batch of new members; sending them one by one")
            return [], members
        by_identity = {emails.identity(m.want.email): m for m in members}
        outcomes = []
        for new in result.get("new_members") or []:
            member = by_identity.pop(emails.identity(str(new.get("email_address", ""))), None)
            if member is not None:
                outcomes.append(Outcome(member, "added", status=str(new.get("status") or "")))
        existing = []
        for refusal in result.get("errors") or []:
            address = str(refusal.get("email_address", ""))
            member = by_identity.pop(emails.identity(address), None)
            if member is None:
                continue
            if refusal.get("error_code") == "ERROR_CONTACT_EXISTS":
                # After an attempt that went unanswered, "exists" may be our own add.
                member.created = maybe_ours
                existing.append(member)
            else:
                reason = str(refusal.get("error") or "refused")
                if refusal.get("field_message"):  # which merge field, in Mailchimp's words
                    reason += f" {refusal.get('field')}: {refusal['field_message']}"
                outcomes.append(Outcome(member, "failed", reason=reason))
        # A member Mailchimp's answer does not mention is not taken for added.
        outcomes += [
            Outcome(m, "failed", reason="Mailchimp's answer did not mention this member.")
            for m in by_identity.values()
        ]
        return outcomes, existing

    # -- existing members -----------------------------------------------------------

    def _send_singles(self, audience_id: str, members: list[Member]) -> list[Outcome]:
        """Changes to existing members: one by one when few, else as one batch operation."""
        if not members:
            return []
        if len(members) <= self.batch_threshold:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                return list(pool.map(lambda m: self._send_one(audience_id, m), members))
        results = self.api.run_operations([self._operation(audience_id, m) for m in members])
        outcomes, retry, tagging = [], [], []
        for member, (status_code, reply) in zip(members, results, strict=True):
            if is_transient(status_code, titled=bool(reply.get("title"))):
                retry.append(member)  # transient inside the batch: once more, one by one
                continue
            outcome = self._outcome(member, status_code, reply)
            outcomes.append(outcome)
            if outcome.counted in ("added", "updated") and member.changes_tags:
                tagging.append(member)
        if tagging:
            self.api.run_operations([self._tag_operation(audience_id, m) for m in tagging])
        return outcomes + [self._send_one(audience_id, m) for m in retry]

    def _send_one(self, audience_id: str, member: Member) -> Outcome:
        try:
            outcome = self._request(audience_id, member)
            if outcome.counted in ("added", "updated") and member.changes_tags:
                self.api.set_tags(
                    audience_id, member.hash, member.decision.add_tags, member.decision.remove_tags
                )
            return outcome
        except MailchimpApiError as error:
            if is_transient(error.status, titled=bool(error.title)):
                raise  # Mailchimp is unavailable even after retries: stop the run here
            return self._outcome(
                member, error.status, {"title": error.title, "detail": error.detail}
            )
        except Exception as error:  # an odd answer about one member: that member's failure
            log.exception("Sending one member to Mailchimp failed")
            return Outcome(member, "failed", reason=f"Unexpected answer ({type(error).__name__}).")

    def _request(self, audience_id: str, member: Member) -> Outcome:
        action = member.decision.action
        if action is Action.ARCHIVE:
            gone = self.api.archive_member(audience_id, member.hash)
            return self._outcome(member, 204 if gone else 404, {})
        body = self._member_body(member)
        if action is Action.MOVE:
            reply = self._move(audience_id, member, body)
        else:
            reply = self.api.upsert_member(audience_id, member.hash, body)
        return self._outcome(member, 200, reply)

    def _move(self, audience_id: str, member: Member, body: dict[str, Any]) -> Any:
        """PATCH the old member to the new address.

        If the old one is gone (a retry found the move done, or it was removed), the
        member is written at the new address. If the new address is a member already
        (someone joined with it meanwhile), that member is updated instead: it is not
        the shop's, and the old member, left without contacts, goes as departed.
        """
        try:
            return self.api.change_member(audience_id, member.previous.subscriber_hash, body)
        except MailchimpApiError as error:
            if error.status == 400 and error.title == "Member Exists":
                member.decision = Decision(Action.UPDATE, add_tags=member.want.tags)
            elif error.status != 404:
                raise
        return self.api.upsert_member(
            audience_id, member.hash, dict(body, status_if_new=self.new_status)
        )

    def _outcome(self, member: Member, status_code: int, reply: Mapping[str, Any]) -> Outcome:
        """What one Mailchimp answer means for the run and for what the shop knows."""
        action = member.decision.action
        if action is Action.ARCHIVE:
            archived = status_code == 204
            return Outcome(member, "archived" if archived else "unchanged", status="archived")
        if status_code >= 400:
            if reply.get("title") == "Member In Compliance State" and action is Action.RESTORE:
                return Outcome(member, "blocked", reason="unsubscribed before it was archived")
            detail = reply.get("detail") or reply.get("title") or f"HTTP {status_code}"
            return Outcome(member, "failed", reason=f"Mailchimp refused the request: {detail}")
        status = str(reply.get("status") or "")
        blocked = blocked_by(status) if status else None
        if blocked is not None:
            return Outcome(member, "blocked", status=status, reason=blocked.reason)
        return Outcome(member, COUNTED[action], status=status or None)

    # -- request bodies -------------------------------------------------------------

    def _member_body(self, member: Member) -> dict[str, Any]:
        wanted = member.want
        body: dict[str, Any] = {
            "email_address": wanted.email,
            "merge_fields": dict(wanted.merge_fields),
        }
        if member.decision.action is Action.MOVE:
            return body
        body["status_if_new"] = self.new_status
        if member.decision.action is Action.RESTORE:
            body["status"] = self.new_status  # only a member the shop archived itself
        return body

    def _operation(self, audience_id: str, member: Member) -> dict[str, Any]:
        members = f"/lists/{audience_id}/members"
        action = member.decision.action
        if action is Action.ARCHIVE:
            return {"method": "DELETE", "path": f"{members}/{member.hash}"}
        body = json.dumps(self._member_body(member))
        if action is Action.MOVE:
            path = f"{members}/{member.previous.subscriber_hash}"
            return {"method": "PATCH", "path": path, "body": body}
        return {"method": "PUT", "path": f"{members}/{member.hash}", "body": body}

    def _tag_operation(self, audience_id: str, member: Member) -> dict[str, Any]:
        body = tag_changes(member.decision.add_tags, member.decision.remove_tags)
        path = f"/lists/{audience_id}/members/{member.hash}/tags"
        return {"method": "POST", "path": path, "body": json.dumps(body)}
