"""The consent rules, checked by a model: the shop, Mailchimp and the extension interleaved.

A hypothesis state machine drives one host shop of each shape of ``tests/hosts.py`` (both
roles in one audience, real time on) against the emulator, mixing:

- the shop's own changes: contacts added (either role, one person in both), deleted,
  their flag flipped, their address changed (case, whitespace and accented spellings of
  one address, another contact's address), a change rolled back;
- what happens in Mailchimp, done on the emulator's state: an unsubscribe, a bounce
  (cleaned), an archive by someone else, a form sign-up, a profile edit, an address
  change (its ``upemail`` webhook is sent at once), members already there before the
  first Sync;
- the extension's work: Sync, preview, a drain of the outbox, reconcile, webhook
  deliveries of the events Mailchimp queued, and bursts of injected faults.

Determinism: the real-time dispatcher is stopped, so nothing runs in the background;
the outbox is delivered only by the ``drain`` rule, as a worker would. Calls to
Mailchimp go one at a time (``MAILCHIMP_SYNC_MAX_CONNECTIONS = 1``), so a fault burst
hits the same calls on every replay, and after each action the test waits until the
emulator has answered every request it took (a timed-out one is carried out late).

After every step the consent invariants hold; after every successful Sync (and every
successful drain once the first Sync is done) Mailchimp holds exactly what the shop
consents to; at the end, faults cleared, a last Sync and drain must get there too.

Budget: ``CONSENT_MACHINE_EXAMPLES`` (default 40 for each of the eight tests: 320 in
all) and ``CONSENT_MACHINE_STEPS`` (default 40) from the environment. The default run
replays the same examples every time; ``CONSENT_MACHINE_RANDOM=1`` draws new ones, for a
soak (for example 150 examples a test).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flask_mailchimp_sync.engine import runner as sync_module
from flask_mailchimp_sync.exceptions import MailchimpSyncError
from flask_mailchimp_sync.jobs import dispatcher
from flask_mailchimp_sync.testing import MailchimpEmulator
from flask_mailchimp_sync.testing.emulator.state import now as mailchimp_now

from . import hosts

EXAMPLES = int(os.environ.get("CONSENT_MACHINE_EXAMPLES", "40"))
STEPS = int(os.environ.get("CONSENT_MACHINE_STEPS", "40"))
#: CI replays the same examples every run; a soak sets CONSENT_MACHINE_RANDOM=1.
DERANDOMIZE = os.environ.get("CONSENT_MACHINE_RANDOM") != "1"

#: One person's address as the shop may hold it: case, whitespace and accents vary.
SPELLINGS = {
    "zed@mailbox.io": ("zed@mailbox.io", "Zed@mailbox.io\n", " ZED@MAILBOX.IO "),
    "álvaro@correo.es": ("álvaro@correo.es", "ÁLVARO@correo.es", "Álvaro@correo.es\t"),
    "bea@fastpost.net": ("bea@fastpost.net", "Bea@FastPost.net"),
    "cy@shop-mail.org": ("cy@shop-mail.org",),
}
IDENTITIES = (*SPELLINGS, "dee@post-box.net")
#: Addresses no contact can be sent as (skipped by a sync).
INVALID = (None, "no-at-sign.mailbox.io")
ADDRESSES = (*(s for spellings in SPELLINGS.values() for s in spellings), *INVALID)
#: What people type into a Mailchimp form, or change their address to in Mailchimp.
TYPED = (*IDENTITIES, "Bea@FastPost.net", "ÁLVARO@correo.es")
ROLE_TAGS = {"customer": "Customer", "consignor": "Consignor"}
ACTIVE = frozenset({"subscribed", "pending"})
BLOCKING = frozenset({"unsubscribed", "cleaned"})
#: Injected faults: a kind and how many requests in a row get it (timeouts cost time:
#: at most three of those).
FAULTS = st.tuples(
    st.sampled_from(("429", "429-bare", "403-bare", "500", "503-bare", "timeout", "drop")),
    st.integers(1, 8),
)
#: A timed-out request is answered after HANG seconds; the client gives up after TIMEOUT.
#: With HANG = 1.5 x TIMEOUT, a late request lands half a TIMEOUT away from any retry.
TIMEOUT = 0.25
HANG = 0.375
WEBHOOK_SECRET = "machine-webhook-secret"


def identity(email: str | None) -> str | None:
    """An address's identity: every whitespace trimmed, then lowercased (None: blank)."""
    if email is None or not email.strip():
        return None
    return email.strip().lower()


def sendable(email: str | None) -> bool:
    return email is not None and email not in INVALID and identity(email) is not None


@dataclass(frozen=True, order=True)
class ContactRef:
    """A contact of the shop: its role and primary key."""

    role: str
    key: int

    def __repr__(self) -> str:
        return f"{self.role}#{self.key}"


@dataclass(frozen=True)
class Held:
    """One member as Mailchimp holds it."""

    email: str
    status: str
    archived: bool
    tags: frozenset[str]

    @property
    def ident(self) -> str:
        return self.email.strip().lower()

    @property
    def active(self) -> bool:
        return not self.archived and self.status in ACTIVE

    def __str__(self) -> str:
        state = "archived" if self.archived else self.status
        return f"{self.email!r} {state} {sorted(self.tags)}"


class SettlingEmulator(MailchimpEmulator):
    """The emulator, counting the requests it is still answering."""

    def __init__(self) -> None:
        super().__init__()
        self._busy = 0
        self._idle = threading.Condition()
        inner = self.wsgi_app

        def counted(environ: Any, start_response: Any) -> Any:
            with self._idle:
                self._busy += 1
            try:
                return inner(environ, start_response)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        self.wsgi_app = counted  # type: ignore[assignment]

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every request taken is answered (timed-out ones are carried out late)."""
        with self._idle:
            settled = self._idle.wait_for(lambda: self._busy == 0, timeout)
        assert settled, "the emulator was still answering requests"


@dataclass
class World:
    """What the examples of one pytest test share: a host shop and the emulator."""

    host: hosts.Host
    emulator: SettlingEmulator
    api_key: str

    def empty_shop(self) -> None:
        """Delete every row, so an example starts from an empty shop (keys from 1)."""
        session = self.host.db.session
        tables = self.host.db.metadata.sorted_tables
        if session.get_bind().dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in tables)
            session.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                session.execute(table.delete())
        session.commit()


def step(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark the machine unhealthy while a rule or invariant runs (teardown checks only
    when every step passed, so a failure is reported as itself)."""

    @functools.wraps(method)
    def run(self: ConsentMachine, *args: Any, **kwargs: Any) -> Any:
        self.healthy = False
        result = method(self, *args, **kwargs)
        self.healthy = True
        return result

    return run


class ConsentMachine(RuleBasedStateMachine):
    contacts = Bundle("contacts")

    def __init__(self, world: World) -> None:
        super().__init__()
        self.healthy = False
        self.world = world
        self.emulator = world.emulator
        self.mailchimp_state = world.emulator.state
        self.emulator.faults.clear()
        self.audience = self.mailchimp_state.add_audience(world.api_key, "Everyone")
        self.host = world.host
        self.context = self.host.app.app_context()
        self.context.push()
        self.session = self.host.db.session
        world.empty_shop()
        hosts.connect(self.host, world.api_key, self.audience.id, realtime=True)
        self.host.mailchimp.settings_store().get().webhook_secret = WEBHOOK_SECRET
        self.session.commit()
        prefix = self.host.app.config["MAILCHIMP_SYNC_URL_PREFIX"]
        self.webhook_url = f"{prefix}/webhook/{WEBHOOK_SECRET}"
        self.client = self.host.app.test_client()

        # -- what the model remembers -------------------------------------------------
        #: unique ids of members the shop did not create (form sign-ups, members that
        #: were there before the first Sync), with the tags they came with.
        self.outsiders: dict[str, frozenset[str]] = {}
        #: unique ids of members unsubscribed or cleaned in Mailchimp, or archived there by
        #: someone else: only Mailchimp's side may make them subscribed again.
        self.mailchimp_blocked: set[str] = set()
        self.archived_by_others: set[str] = set()
        #: Contacts who are the person whose member was unsubscribed or cleaned in
        #: Mailchimp (linked to it then, or their flag turned off by the extension for it):
        #: the block follows them, whatever address they have now.
        self.blocked_people: set[ContactRef] = set()
        #: Contacts whose member someone else archived: not owed a new subscription.
        self.hidden_people: set[ContactRef] = set()
        #: The identity each contact had when the extension last took it in.
        self.linked: dict[ContactRef, str] = {}
        #: Identities whose consent the shop withdrew since the last successful delivery.
        self.withdrawn: set[str] = set()
        self.first_sync_done = False
        #: Webhook events Mailchimp has queued for the shop (unsubscribe, cleaned, profile).
        self.webhooks: list[dict[str, str]] = []

    # -- reading the two sides ----------------------------------------------------------

    def _model(self, role: str) -> Any:
        return self.host.Patron if role == "customer" else self.host.Supplier

    def _instance(self, ref: ContactRef) -> Any:
        instance = self.session.get(self._model(ref.role), ref.key)
        assert instance is not None, f"{ref} vanished from the shop"
        return instance

    def shop(self) -> dict[ContactRef, tuple[str | None, bool]]:
        """Every contact: its address as stored and its flag."""
        found = {}
        for role in ROLE_TAGS:
            for row in self.session.query(self._model(role)):
                found[ContactRef(role, row.id)] = (row.email, self.host.flag(row))
        return found

    def consenting(self, shop: dict[ContactRef, tuple[str | None, bool]] | None = None) -> dict:
        """Identities the shop consents to send, with the contacts that consent."""
        found: dict[str, set[ContactRef]] = {}
        for ref, (email, flag) in (self.shop() if shop is None else shop).items():
            if flag and sendable(email):
                found.setdefault(identity(email), set()).add(ref)
        return found

    def held(self) -> dict[str, Held]:
        """Every member of the audience, archived too, by unique id."""
        with self.mailchimp_state.lock:
            return {
                m.unique_email_id: Held(m.email, m.status, m.archived, frozenset(m.tags))
                for m in self.audience.members.values()
            }

    def member(self, ident: str) -> Any:
        """The emulator's member with this identity, if any."""
        with self.mailchimp_state.lock:
            for member in self.audience.members.values():
                if member.email.strip().lower() == ident:
                    return member
        return None

    def outbox(self) -> list[tuple[str, str]]:
        Outbox = self.host.mailchimp.models.Outbox
        rows = self.session.query(Outbox).filter(Outbox.delivered_at.is_(None))
        return [(row.source, row.contact_key) for row in rows]

    def ref_of(self, source: str, key: str) -> ContactRef:
        return ContactRef(source.split(":", 1)[0], int(key))

    # -- the shop's own changes -----------------------------------------------------------

    def _withdraw(self, ref: ContactRef) -> None:
        """The contact may stop consenting for its identity: delivery is pending."""
        email, flag = self.shop()[ref]
        if flag and sendable(email):
            self.withdrawn.add(identity(email))

    @rule(
        target=contacts,
        role=st.sampled_from(tuple(ROLE_TAGS)),
        address=st.sampled_from(ADDRESSES),
        flag=st.booleans(),
    )
    @step
    def add_contact(self, role: str, address: str | None, flag: bool) -> ContactRef:
        add = self.host.add_patron if role == "customer" else self.host.add_supplier
        ref = ContactRef(role, add(address, opt_in=flag).id)
        self._forget(ref)
        note(f"shop: {ref} added as {address!r}, flag {flag}")
        return ref

    @rule(
        target=contacts,
        person=st.sampled_from(tuple(SPELLINGS)),
        first=st.integers(0, 2),
        second=st.integers(0, 2),
        flags=st.tuples(st.booleans(), st.booleans()),
    )
    @step
    def add_person_in_both_roles(
        self, person: str, first: int, second: int, flags: tuple[bool, bool]
    ) -> Any:
        spellings = SPELLINGS[person]
        customer = self.host.add_patron(spellings[first % len(spellings)], opt_in=flags[0])
        consignor = self.host.add_supplier(spellings[second % len(spellings)], opt_in=flags[1])
        refs = ContactRef("customer", customer.id), ContactRef("consignor", consignor.id)
        for ref in refs:
            self._forget(ref)
        note(f"shop: {refs} added for {person!r} (both roles), flags {flags}")
        return multiple(*refs)

    def _forget(self, ref: ContactRef) -> None:
        # SQLite reuses a deleted row's key: nothing the model knew of the old row holds.
        self.blocked_people.discard(ref)
        self.hidden_people.discard(ref)
        self.linked.pop(ref, None)

    @rule(contact=consumes(contacts))
    @step
    def delete_contact(self, contact: ContactRef) -> None:
        self._withdraw(contact)
        self.host.delete(self._instance(contact))
        self._forget(contact)
        note(f"shop: {contact} deleted")

    @rule(contact=contacts, value=st.booleans())
    @step
    def set_flag(self, contact: ContactRef, value: bool) -> None:
        if not value:
            self._withdraw(contact)
        self.host.set_flag(self._instance(contact), value)
        note(f"shop: {contact} flag {value}")

    @rule(contact=contacts, address=st.sampled_from(ADDRESSES))
    @step
    def change_address(self, contact: ContactRef, address: str | None) -> None:
        self._withdraw(contact)
        self.host.set_email(self._instance(contact), address)
        note(f"shop: {contact} address {address!r}")

    @rule(contact=contacts, other=contacts)
    @step
    def take_anothers_address(self, contact: ContactRef, other: ContactRef) -> None:
        address = self._instance(other).email
        self._withdraw(contact)
        self.host.set_email(self._instance(contact), address)
        note(f"shop: {contact} takes {other}'s address {address!r}")

    @rule(contact=contacts, value=st.booleans(), address=st.sampled_from(ADDRESSES))
    @step
    def rolled_back_change(self, contact: ContactRef, value: bool, address: str | None) -> None:
        before, waiting = self.shop(), len(self.outbox())
        instance = self._instance(contact)
        self.host.flag(instance)  # loads the related row the flag may live on
        if contact.role == "consignor" and self.host.shape in ("path", "callable"):
            instance.prefs.marketing_ok = value
        else:
            instance.opt_in = value
        instance.email = address
        self.session.flush()
        self.session.rollback()
        note(f"shop: {contact} flag {value}, address {address!r}, rolled back")
        assert self.shop() == before
        assert len(self.outbox()) == waiting, "a rolled-back change left an outbox row"

    # -- what happens in Mailchimp ----------------------------------------------------------

    def _event(self, kind: str, member: Any, **extra: str) -> dict[str, str]:
        data = {"type": kind, "fired_at": "2009-03-26 21:40:57", "data[list_id]": self.audience.id}
        if kind == "unsubscribe":
            data.update(
                {
                    "data[action]": "unsub",
                    "data[reason]": "manual",
                    "data[id]": "8a25ff1d98",
                    "data[email]": member.email,
                    "data[email_type]": "html",
                    "data[merges][EMAIL]": member.email,
                    "data[merges][FNAME]": "Mailchimp",
                    "data[merges][LNAME]": "API",
                    "data[merges][INTERESTS]": "Group1,Group2",
                    "data[ip_opt]": "10.20.10.30",
                    "data[campaign_id]": "cb398d21d2",
                }
            )
        elif kind == "cleaned":
            data.update(
                {
                    "data[campaign_id]": "4fjk2ma9xd",
                    "data[reason]": "hard",
                    "data[email]": member.email,
                }
            )
        elif kind == "profile":
            data.update(
                {
                    "data[id]": "8a25ff1d98",
                    "data[email]": member.email,
                    "data[email_type]": "html",
                    "data[merges][EMAIL]": member.email,
                    "data[merges][FNAME]": extra["first"],
                    "data[merges][LNAME]": "API",
                    "data[ip_opt]": "10.20.10.30",
                }
            )
        elif kind == "upemail":
            data.update(
                {
                    "data[new_id]": "51da8c3259",
                    "data[new_email]": extra["new"],
                    "data[old_email]": extra["old"],
                }
            )
        return data

    def _block(self, ident: str, status: str) -> None:
        member = self.member(ident)
        if member is None or member.archived or member.status not in ACTIVE:
            note(f"mailchimp: nobody subscribed as {ident!r} to be {status}")
            return
        self.mailchimp_state.set_status(self.audience.id, member.email, status)
        self.mailchimp_blocked.add(member.unique_email_id)
        # The person behind the member: contacts the extension took in at this address.
        self.blocked_people |= {ref for ref, linked in self.linked.items() if linked == ident}
        self.webhooks.append(
            self._event("unsubscribe" if status == "unsubscribed" else "cleaned", member)
        )
        note(f"mailchimp: {member.email!r} {status}")

    @rule(address=st.sampled_from(IDENTITIES))
    @step
    def mailchimp_unsubscribe(self, address: str) -> None:
        self._block(address, "unsubscribed")

    @rule(address=st.sampled_from(IDENTITIES))
    @step
    def mailchimp_bounce(self, address: str) -> None:
        self._block(address, "cleaned")

    @rule(address=st.sampled_from(IDENTITIES))
    @step
    def mailchimp_archive(self, address: str) -> None:
        member = self.member(address)
        if member is None or member.archived:
            note(f"mailchimp: no member {address!r} to archive")
            return
        with self.mailchimp_state.lock:
            self.mailchimp_state.archive_member(self.audience, member.email)
        self.archived_by_others.add(member.unique_email_id)
        # Its status is hidden from then on (Mailchimp shows "archived"), so the extension
        # may keep its person blocked at a new address, as if they had unsubscribed.
        ident = identity(member.email)
        self.hidden_people |= {ref for ref, linked in self.linked.items() if linked == ident}
        note(f"mailchimp: staff archive {member.email!r}")

    @rule(address=st.sampled_from(IDENTITIES))
    @step
    def mailchimp_comes_back(self, address: str) -> None:
        """Someone who left comes back: signs up again on a form after unsubscribing, or
        staff un-archive a member someone archived. They joined again on their own: from
        then on the member is not the shop's to archive (nor to keep out)."""
        member = self.member(address)
        uid = member.unique_email_id if member is not None else None
        if uid not in self.mailchimp_blocked and uid not in self.archived_by_others:
            note(f"mailchimp: nobody who left as {address!r} to come back")
            return
        assert member is not None
        with self.mailchimp_state.lock:
            member.archived, member.status = False, "subscribed"
            member.last_changed = mailchimp_now()
        self.mailchimp_blocked.discard(uid)
        self.archived_by_others.discard(uid)
        self.outsiders[uid] = frozenset(member.tags)
        # The person behind it said yes again: their refusal may still hold at a new
        # address (until the extension reads the member again), or not.
        ident = identity(member.email)
        people = {ref for ref, linked in self.linked.items() if linked == ident}
        self.blocked_people -= people
        self.hidden_people |= people
        note(f"mailchimp: {member.email!r} comes back, subscribed")

    @rule(address=st.sampled_from(TYPED))
    @step
    def mailchimp_form_signup(self, address: str) -> None:
        self._place(address, "subscribed", frozenset(), "form sign-up")

    @precondition(lambda self: not self.first_sync_done)
    @rule(
        address=st.sampled_from(TYPED),
        status=st.sampled_from(("subscribed", "unsubscribed", "cleaned")),
        tags=st.frozensets(st.sampled_from(tuple(ROLE_TAGS.values()))),
    )
    @step
    def mailchimp_member_before_first_sync(
        self, address: str, status: str, tags: frozenset[str]
    ) -> None:
        self._place(address, status, tags, "there before the first Sync")

    def _place(self, address: str, status: str, tags: frozenset[str], how: str) -> None:
        if self.member(identity(address)) is not None:
            note(f"mailchimp: {address!r} is a member already")
            return
        member = self.mailchimp_state.add_member(self.audience.id, address, status, tags=tags)
        self.outsiders[member.unique_email_id] = tags
        if status in BLOCKING:
            self.mailchimp_blocked.add(member.unique_email_id)
        note(f"mailchimp: {address!r} {status} {sorted(tags)}, {how}")

    @rule(address=st.sampled_from(IDENTITIES), first=st.sampled_from(("Zed", "Ana")))
    @step
    def mailchimp_profile_edit(self, address: str, first: str) -> None:
        member = self.member(address)
        if member is None:
            note(f"mailchimp: no member {address!r} to edit")
            return
        with self.mailchimp_state.lock:
            member.merge_fields.update({"FNAME": first, "LNAME": "Edited"})
        self.webhooks.append(self._event("profile", member, first=first))
        note(f"mailchimp: {member.email!r} edits the profile")

    @rule(address=st.sampled_from(IDENTITIES), new=st.sampled_from(TYPED))
    @step
    def mailchimp_address_change(self, address: str, new: str) -> None:
        """The member changes address in Mailchimp; the upemail webhook comes at once."""
        member, new_ident = self.member(address), identity(new)
        shop = self.shop()
        if (
            member is None
            or not Held(member.email, member.status, member.archived, frozenset()).active
            or self.member(new_ident) is not None
            or any(identity(email) == new_ident for email, _ in shop.values())
        ):
            note(f"mailchimp: {address!r} cannot move to {new!r}")
            return
        old = member.email
        with self.mailchimp_state.lock:
            del self.audience.members[member.hash]
            member.email = new
            self.audience.members[member.hash] = member
        note(f"mailchimp: {old!r} changes address to {new!r}; upemail webhook sent")
        if address in self.withdrawn:
            self.withdrawn.add(new_ident)
        moving = {ref for ref, (email, _) in shop.items() if identity(email) == address}
        self._deliver(self._event("upemail", member, old=old, new=new))
        moved = self.shop()
        stuck = sorted(ref for ref in moving if identity(moved[ref][0]) != new_ident)
        assert not stuck, f"upemail {old!r} -> {new!r} left {stuck} at the old address"
        for ref in moving:
            if self.linked.get(ref) == address:
                self.linked[ref] = new_ident

    # -- the extension's work ----------------------------------------------------------------

    def _act(self, what: str, call: Callable[[], Any], *, refusals: bool = False) -> Any:
        """Run one action of the extension and check what it did to Mailchimp.

        :param refusals: the action may raise MailchimpSyncError while faults are on.
        """
        faults_on = self.emulator.faults.pending > 0
        before, last_run, shop = self.held(), self._last_run_id(), self.shop()
        try:
            result = call()
        except MailchimpSyncError as error:
            self.session.rollback()
            self.emulator.settle()
            assert refusals and faults_on, f"{what} raised {error!r} with no fault injected"
            note(f"{what}: refused while faults are on ({error})")
            result = error
        except BaseException:
            self.session.rollback()
            self.emulator.settle()
            raise
        self.emulator.settle()
        self.session.expire_all()
        self._check_changes(what, before, self.held())
        # Contacts whose flag the extension turned off: it took them for someone who left
        # in Mailchimp, and that block follows them.
        was_on = {ref for ref, (_, flag) in shop.items() if flag}
        self.blocked_people |= {ref for ref, (_, flag) in self.shop().items() if not flag} & was_on
        runs = self._runs_since(last_run)
        stuck = [(run.id, run.state) for run in runs if run.state in ("queued", "running")]
        assert not stuck, f"{what} left runs unfinished: {stuck}"
        failed = [(run.id, run.error) for run in runs if run.state == "failed"]
        assert faults_on or not failed, f"{what} failed with no fault injected: {failed}"
        return result

    def _last_run_id(self) -> int:
        SyncRun = self.host.mailchimp.models.SyncRun
        return self.session.execute(sa.select(sa.func.max(SyncRun.id))).scalar() or 0

    def _runs_since(self, last: int) -> list[Any]:
        SyncRun = self.host.mailchimp.models.SyncRun
        return list(self.session.query(SyncRun).filter(SyncRun.id > last).order_by(SyncRun.id))

    def _check_changes(self, what: str, before: dict[str, Held], after: dict[str, Held]) -> None:
        consenting = self.consenting()
        for uid, now in after.items():
            was = before.get(uid)
            if now.active and not (was is not None and was.active):
                ident = now.ident
                refs = consenting.get(ident, set())
                assert refs, f"{what} made {now} with no consenting contact in the shop"
                assert not refs <= self.blocked_people, (
                    f"{what} made {now}, yet its contacts {sorted(refs)} are the person whose "
                    "member was unsubscribed or cleaned in Mailchimp"
                )
            if was is not None and was.ident != now.ident and uid in self.outsiders:
                del self.outsiders[uid]  # the shop moved it: "sent by the shop" from now on
                note(f"{what}: moved {was} to {now}")

    def _delivered(self, covered: set[ContactRef] | None) -> None:
        """A successful delivery took in *covered* contacts (None: every contact)."""
        shop = self.shop()
        blocked_idents = {
            held.ident
            for uid, held in self.held().items()
            if uid in self.mailchimp_blocked and held.status in BLOCKING
        }
        hidden_idents = {
            held.ident
            for uid, held in self.held().items()
            if uid in self.archived_by_others and held.archived
        }
        for ref, (email, _flag) in shop.items():
            ident = identity(email)
            if ident is None or (covered is not None and ref not in covered):
                continue
            self.linked[ref] = ident
            if ident in blocked_idents:
                self.blocked_people.add(ref)
            if ident in hidden_idents:
                self.hidden_people.add(ref)
        self.withdrawn.clear()

    @rule()
    @step
    def sync(self) -> None:
        run = self._act("Sync", lambda: hosts.sync(self.host))
        note(
            f"extension: Sync #{run.id} {run.state} {run.error or ''} "
            f"(added {run.added}, updated {run.updated}, archived {run.archived}, "
            f"blocked {run.blocked}, failed {run.failed})"
        )
        if run.state == "done":
            self.first_sync_done = True
            self._delivered(None)
            self.check_mailchimp_matches_shop("after a Sync")

    @rule()
    @step
    def preview(self) -> None:
        shop, writes = self.shop(), len(self.mailchimp_state.write_requests())
        before = self.held()
        run = self._act("Preview", lambda: hosts.sync(self.host, dry_run=True))
        note(f"extension: preview #{run.id} {run.state}")
        assert len(self.mailchimp_state.write_requests()) == writes, "a preview wrote to Mailchimp"
        assert self.held() == before, "a preview changed Mailchimp"
        assert self.shop() == shop, "a preview changed the shop"

    @rule()
    @step
    def drain(self) -> None:
        waiting = {self.ref_of(source, key) for source, key in self.outbox()}
        writes = len(self.mailchimp_state.write_requests())
        result = self._act("Drain", lambda: hosts.drain(self.host))
        note(f"extension: drain {result}")
        if result.error is None and not self.first_sync_done:
            # Nothing reaches the audience before the first Sync: the changes wait for it.
            wrote = len(self.mailchimp_state.write_requests()) - writes
            assert wrote == 0, "a delivery wrote to Mailchimp before the first Sync"
        elif result.error is None:
            left = self.outbox()
            assert not left, f"a successful drain left {left} undelivered"
            self._delivered(waiting)
            self.check_mailchimp_matches_shop("after a drain")
        else:
            assert self.outbox(), "a failed drain lost its changes"

    @rule()
    @step
    def reconcile(self) -> None:
        from flask_mailchimp_sync.inbound import reconcile

        result = self._act("Reconcile", lambda: reconcile(self.host.mailchimp), refusals=True)
        note(f"extension: reconcile -> {result!r}")

    @precondition(lambda self: self.webhooks)
    @rule(twice=st.booleans())
    @step
    def deliver_webhook(self, twice: bool) -> None:
        """Mailchimp delivers its oldest queued event (sometimes twice: at least once)."""
        event = self.webhooks.pop(0)
        for _ in range(1 + twice):
            self._deliver(event)

    def _deliver(self, event: dict[str, str]) -> None:
        kind, email = event["type"], event.get("data[email]", event.get("data[old_email]"))
        note(f"extension: webhook {kind} {email!r}")

        def post() -> Any:
            return self.client.post(self.webhook_url, data=event)

        response = self._act(f"Webhook {kind}", post)
        assert response.status_code == 200, f"webhook {kind} answered {response.status_code}"
        if kind not in ("unsubscribe", "cleaned"):
            return
        member, ident = self.member(identity(email)), identity(email)
        if member is None or member.status not in BLOCKING:
            return  # a stale event: that address is someone else's now
        shop = self.shop()
        here = {ref for ref, (address, _) in shop.items() if identity(address) == ident}
        self.blocked_people |= here
        still = sorted(ref for ref in here if shop[ref][1] and self._flag_writable(ref))
        assert not still, f"webhook {kind} {email!r} left the flag on for {still}"

    def _flag_writable(self, ref: ContactRef) -> bool:
        # The callable host gives the customer's callable flag no set_marketing.
        return not (self.host.shape == "callable" and ref.role == "customer")

    @rule(fault=FAULTS)
    @step
    def fault_burst(self, fault: tuple[str, int]) -> None:
        kind, count = fault
        count = min(count, 3) if kind == "timeout" else count
        self.emulator.faults.fail_next(count, kind)
        note(f"mailchimp: the next {count} requests fail with {kind}")

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    @step
    def consent_holds(self) -> None:
        self.nobody_is_subscribed_without_consent()
        self.who_left_in_mailchimp_stays_out()
        self.members_the_shop_did_not_create_are_never_archived()
        self.no_run_is_left_unfinished()

    def nobody_is_subscribed_without_consent(self) -> None:
        consenting = self.consenting()
        wrong = [
            str(held)
            for uid, held in self.held().items()
            if held.active
            and uid not in self.outsiders
            and held.ident not in consenting
            and held.ident not in self.withdrawn
        ]
        assert not wrong, f"subscribed without a consenting contact in the shop: {wrong}"

    def who_left_in_mailchimp_stays_out(self) -> None:
        held = self.held()
        back = [str(held[uid]) for uid in self.mailchimp_blocked if held[uid].active]
        assert not back, f"unsubscribed or cleaned in Mailchimp, subscribed again: {back}"
        back = [str(held[uid]) for uid in self.archived_by_others if held[uid].active]
        assert not back, f"archived in Mailchimp by someone else, brought back: {back}"

    def members_the_shop_did_not_create_are_never_archived(self) -> None:
        held = self.held()
        archived = [
            str(held[uid])
            for uid in self.outsiders
            if held[uid].archived and uid not in self.archived_by_others
        ]
        assert not archived, f"the shop archived members it did not create: {archived}"

    def no_run_is_left_unfinished(self) -> None:
        SyncRun = self.host.mailchimp.models.SyncRun
        stuck = self.session.query(SyncRun).filter(SyncRun.state.in_(["queued", "running"]))
        assert stuck.count() == 0, "a run is still queued or running after it returned"

    # -- the whole picture ---------------------------------------------------------------------

    def check_mailchimp_matches_shop(self, when: str) -> None:
        """Every consenting contact not blocked is a subscribed member with its role tags;
        nobody else is subscribed but members the shop did not create."""
        consenting, held = self.consenting(), self.held()
        by_ident = {h.ident: (uid, h) for uid, h in held.items()}
        missing = []
        for ident, refs in sorted(consenting.items()):
            uid, member = by_ident.get(ident, (None, None))
            free = refs - self.blocked_people - self.hidden_people
            if not free or (
                member is not None
                and (
                    member.status in BLOCKING
                    or (member.archived and uid in self.archived_by_others)
                )
            ):
                continue
            wanted = {ROLE_TAGS[ref.role] for ref in free}
            allowed = {ROLE_TAGS[ref.role] for ref in refs} | self.outsiders.get(uid, set())
            if member is None or not member.active or not wanted <= member.tags <= allowed:
                missing.append(f"{ident!r} ({sorted(refs)}): {member or 'no member'}")
        assert not missing, f"{when}, Mailchimp lacks what the shop consents to: {missing}"
        extra = [
            str(h)
            for uid, h in held.items()
            if h.active and h.ident not in consenting and uid not in self.outsiders
        ]
        assert not extra, f"{when}, subscribed without a consenting contact: {extra}"

    def teardown(self) -> None:
        try:
            if self.healthy:
                self.healthy = False
                self.emulator.faults.clear()
                note("end: faults cleared, queued webhooks delivered, a last Sync and drain")
                while self.webhooks:
                    self._deliver(self.webhooks.pop(0))
                run = self._act("Final Sync", lambda: hosts.sync(self.host))
                assert run.state == "done", f"the final Sync ended {run.state}: {run.error}"
                self._delivered(None)
                result = self._act("Final drain", lambda: hosts.drain(self.host))
                assert result.error is None, f"the final drain failed: {result.error}"
                assert not self.outbox(), "the final drain left changes undelivered"
                self.check_mailchimp_matches_shop("at the end")
        finally:
            self.emulator.faults.clear()
            self.emulator.settle()
            self.session.rollback()
            self.world.empty_shop()
            self.context.pop()
            with self.mailchimp_state.lock:
                del self.mailchimp_state.audiences[self.audience.id]
                self.mailchimp_state.requests.clear()


def _no_fsync(engine: sa.Engine) -> None:
    """SQLite without waiting for the disk on each commit (a throwaway test database)."""

    def connected(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous = OFF")

    sa.event.listen(engine, "connect", connected)
    engine.dispose()  # the connections made so far go; new ones skip the wait


@pytest.mark.parametrize(
    "archived_listed", [False, True], ids=["archived-unlisted", "archived-listed"]
)
@pytest.mark.parametrize("shape", hosts.SHAPES)
def test_consent_machine(
    shape: str, archived_listed: bool, tmp_path: Any, monkeypatch: Any
) -> None:
    # Nothing delivers in the background here, so a Sync never has to wait for a lock.
    monkeypatch.setattr(sync_module, "LOCK_PATIENCE", 0.0)
    with SettlingEmulator() as emulator:
        emulator.state.archived_in_unfiltered_list = archived_listed
        emulator.faults.hang_seconds = HANG
        account = emulator.state.add_account("Machine shop")
        url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path}/shop.db"
        host = hosts.make_host(shape, url, emulator.api_url)
        host.app.config.update(
            MAILCHIMP_SYNC_TIMEOUT=TIMEOUT,
            MAILCHIMP_SYNC_RETRY_BACKOFF=0.001,
            MAILCHIMP_SYNC_MAX_CONNECTIONS=1,
        )
        dispatcher(host.app).stop()  # deliveries happen in the drain rule only
        if not os.environ.get("TEST_DATABASE_URL"):
            with host.app.app_context():
                _no_fsync(host.db.engine)
        world = World(host, emulator, account.api_key)

        def machine() -> ConsentMachine:
            return ConsentMachine(world)

        # Keeps each parametrization's examples apart in hypothesis' example database.
        machine._hypothesis_internal_add_digest = f"{shape}-{archived_listed}".encode()  # type: ignore[attr-defined]
        try:
            run_state_machine_as_test(
                machine,
                settings=settings(
                    max_examples=EXAMPLES,
                    stateful_step_count=STEPS,
                    derandomize=DERANDOMIZE,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        finally:
            hosts.drop_host(host)
