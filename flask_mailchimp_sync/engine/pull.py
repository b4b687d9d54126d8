"""Mailchimp's side of an audience, read: every member the first time, later what changed.

The first read matches members already in Mailchimp with the shop's data, so a shop
moving from another integration is not sent again (matched members are not the shop's:
it never archives them). Later reads take only members who unsubscribed, bounced or
were archived since the last look, with an overlap against clock skew; unsubscribes and
bounces are applied to the shop (reconcile). Syncs and ``flask mailchimp reconcile``
share one pull window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import emails
from ..call_policy import is_transient
from ..client import MailchimpApi
from ..exceptions import MailchimpApiError
from ..models import as_utc
from . import ledger, shop, staging
from .planner import ACTIVE, REFUSED, Wanted

if TYPE_CHECKING:
    from ..extension import MailchimpSync

log = logging.getLogger(__name__)

#: Mailchimp's own changes are read again with this overlap, against clock skew.
PULL_OVERLAP = timedelta(minutes=5)
#: The statuses that take a member out of campaigns, read after the first time.
LEFT = ("unsubscribed", "cleaned", "archived")
#: Members kept out that one run or delivery reads again, one request each (the rest
#: are decided from what is known, as before, and read again by a later run).
READ_AGAIN_AT_MOST = 100


def pull_window(role_audiences: Sequence[Any]) -> datetime | None:
    """Since when to read an audience's changes; ``None`` until every role sharing the
    audience has been read once."""
    pulled = [a.pulled_at for a in role_audiences if a.pulled_at is not None]
    if not pulled or len(pulled) != len(role_audiences):
        return None
    return as_utc(min(pulled)) - PULL_OVERLAP


def read_members(
    api: MailchimpApi,
    audience_id: str,
    since: datetime | None,
    statuses: Iterable[str] | None,
    early: Mapping[str, Future[dict[str, Any]]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Members of *statuses* changed since *since*; every member when *statuses* is None.

    *early*: first pages read before (:func:`read_early`), by status. One that holds its
    whole pass is used; a longer pass is read again from its start, all at once: paging
    on after a pause could skip members (pages are by offset, and members leave a status).
    """
    if statuses is None:
        yield from api.iter_members(audience_id, since=since)
        return
    for status in statuses:
        page = early[status].result() if early and status in early else {}
        total = page.get("total_items")
        whole = total is not None and len(page.get("members", [])) >= int(total)
        first = page if whole else None
        yield from api.iter_members(audience_id, since=since, status=status, first=first)


def read_early(
    api: MailchimpApi, audience_id: str, since: datetime | None
) -> dict[str, Future[dict[str, Any]]]:
    """The first page of each status :data:`LEFT` changed since *since*, read side by
    side in threads while the run stages the shop (nothing when *since* is None: the
    first read is every member, page after page)."""
    if since is None:
        return {}
    executor = ThreadPoolExecutor(len(LEFT), thread_name_prefix="mailchimp-pull")
    try:
        return {
            status: executor.submit(api.member_page, audience_id, since=since, status=status)
            for status in LEFT
        }
    finally:
        executor.shutdown(wait=False)  # each thread ends with its one request


def learn(
    extension: MailchimpSync,
    audience_id: str,
    remote: list[dict[str, Any]],
    groups: Callable[[Sequence[str]], Mapping[str, list[Any]]],
    merge_tags: set[str],
    *,
    apply: bool,
) -> set[str]:
    """Note what Mailchimp holds of a page of members; returns those whose status changed.

    *groups* gives the shop's staged contacts of some addresses. With *apply*,
    unsubscribes and bounces turn the shop's flags off, and members with exactly the
    shop's data are matched.
    """
    session, State = extension.db.session, extension.models.MemberState
    remote = [m for m in remote if emails.identity(m.get("email_address"))]
    hashes = [emails.subscriber_hash(m["email_address"]) for m in remote]
    # A member may come back twice in one run (pages shift, or the archived pass repeats
    # it): states are upserted, and a second sighting updates the first.
    states = ledger.member_states(
        session,
        State,
        audience_id,
        dict(zip(hashes, (m["email_address"] for m in remote), strict=True)),
    )
    staged = groups(hashes)
    learned = set()
    for member, member_hash in zip(remote, hashes, strict=True):
        state = states[member_hash]
        status, email = str(member.get("status") or ""), member["email_address"]
        here = staged.get(member_hash, [])
        if state.status != status:
            learned.add(member_hash)
        # Also when the status is known already (a preview noted it) but a contact still
        # consents: the shop's flag follows Mailchimp's unsubscribe either way.
        news = state.status != status or any(c.marketing for c in here)
        if status in ("unsubscribed", "cleaned") and apply and news:
            contacts = {(c.source, c.contact_key) for c in here}
            shop.withdraw(extension, audience_id, email, status, contacts=contacts)
        ledger.set_status(state, status, email)
        if state.fingerprint is None and here and apply:
            _match(state, member, staging.wanted_member(here, merge_tags))
    return learned


def kept_out(states: Mapping[str, Any], groups: Mapping[str, list[Any]]) -> set[str]:
    """Members a contact with the flag wants whose status, as last read, keeps them out
    (unsubscribed, cleaned, transactional, archived by someone else): they may have come
    back since. At most :data:`READ_AGAIN_AT_MOST` of them."""
    kept = {
        member_hash
        for member_hash, rows in groups.items()
        if (state := states.get(member_hash)) is not None
        and state.status is not None
        and state.status not in ACTIVE
        and not (state.status == "archived" and state.archived_by_shop)
        and any(row.marketing for row in rows)
    }
    return set(sorted(kept)[:READ_AGAIN_AT_MOST])


def read_again(
    extension: MailchimpSync,
    api: MailchimpApi,
    audience_id: str,
    hashes: Iterable[str],
    *,
    must: bool = True,
) -> None:
    """Read these members as Mailchimp holds them now, one request each, and note them.

    For the few members a run or a delivery is about to decide on from a status that
    may be old: later reads take only members who left, never those coming back. A
    new unsubscribe or bounce found here turns the shop's flags off too.

    *must*: a member that cannot be read stops the caller (what it decides depends on
    it); otherwise that member is decided from what is known, as before. A reply that
    cannot be this member's (no status, another address) is left out either way.
    Mailchimp unavailable (after the client's retries) stops the caller either way, as
    any other request would: trying each member in turn would hold the run for hours."""
    session, State = extension.db.session, extension.models.MemberState
    for member_hash in sorted(hashes):
        try:
            found = api.member(audience_id, member_hash) or {}
        except MailchimpApiError as error:
            if must or is_transient(error.status, titled=bool(error.title)):
                raise  # Mailchimp unavailable: stop here, not after every member's retries
            log.warning("Mailchimp member %s not read again (%s)", member_hash, error)
            continue
        status, email = str(found.get("status") or ""), str(found.get("email_address") or "")
        if not status or not emails.identity(email) or emails.subscriber_hash(email) != member_hash:
            continue
        state = ledger.member_state(session, State, audience_id, member_hash, email)
        if status in REFUSED and state.status != status:
            shop.withdraw(extension, audience_id, email, status)
        ledger.set_status(state, status, email)
    session.flush()


def _match(state: Any, remote: Mapping[str, Any], wanted: Wanted) -> None:
    """A member already in Mailchimp with exactly the shop's data needs no write.

    Matched, not sent: the shop did not create this member, so it never archives them.
    """
    remote_tags = {t["name"] for t in remote.get("tags", [])}
    theirs = Wanted(
        email=remote["email_address"],
        consent=wanted.consent,
        tags=frozenset(wanted.tags & remote_tags),
        merge_fields={k: remote.get("merge_fields", {}).get(k) for k in wanted.merge_fields},
    )
    if theirs.fingerprint == wanted.fingerprint:
        state.fingerprint = wanted.fingerprint
        state.tags = ",".join(sorted(wanted.tags))
