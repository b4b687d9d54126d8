"""Regressions of consent and delivery: what Mailchimp and the shop end up holding.

Each test arranges one situation of the issue on a host of tests/hosts.py and checks
what a shop relies on: the members the (emulated) Mailchimp holds, the flags and outbox
rows in the shop's database, and that a Sync or a real-time delivery finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import request

from flask_mailchimp_sync import signals
from flask_mailchimp_sync.inbound import reconcile
from flask_mailchimp_sync.testing import MailchimpEmulator, wait_for_jobs
from flask_mailchimp_sync.testing.emulator.state import now

from .conftest import database_url
from .hosts import SHAPES, Host, connect, drain, drop_host, make_host, sync

#: Statuses of members who get campaigns (or are about to confirm).
ACTIVE = {"subscribed", "pending"}


@dataclass
class Shop:
    """A host shop connected to one audience ("Everyone") for both roles."""

    host: Host
    emulator: MailchimpEmulator
    audience: str

    @property
    def session(self) -> Any:
        return self.host.db.session

    def status(self, email: str) -> str | None:
        member = self.emulator.state.member(self.audience, email)
        return None if member is None else member.visible_status

    def tags(self, email: str) -> list[str]:
        member = self.emulator.state.member(self.audience, email)
        return [] if member is None else sorted(member.tags)

    def settle(self) -> None:
        """Let real-time deliveries finish, then read the shop afresh."""
        wait_for_jobs(self.host.app)
        self.session.expire_all()

    def sync(self, **options: Any) -> Any:
        self.settle()
        run = sync(self.host, **options)
        self.session.expire_all()
        return run

    def first_sync(self) -> None:
        """The staff's first Sync of the audience, then real-time updates on."""
        run = self.sync()
        assert (run.state, run.error) == ("done", None)
        self.host.mailchimp.settings_store().get().realtime = True
        self.session.commit()

    def undelivered(self) -> list[tuple[str, int, str | None]]:
        """(contact key, attempts, last error) of the outbox rows still waiting."""
        Outbox = self.host.mailchimp.models.Outbox
        rows = self.session.execute(
            sa.select(Outbox).where(Outbox.delivered_at.is_(None)).order_by(Outbox.id)
        ).scalars()
        return [(row.contact_key, row.attempts, row.last_error) for row in rows]

    def add(self, model: str, email: str, *, opt_in: bool = True) -> Any:
        add = self.host.add_patron if model == "Patron" else self.host.add_supplier
        return add(email, opt_in=opt_in)


@pytest.fixture
def make_shop(emulator: MailchimpEmulator, tmp_path: Any) -> Iterator[Callable[..., Shop]]:
    """Builds a host of a shape inside its app context (real time off until the first
    Sync); drops its tables afterwards."""
    made: list[tuple[Host, Any]] = []

    def build(shape: str) -> Shop:
        host = make_host(shape, database_url(tmp_path), emulator.api_url)
        context = host.app.app_context()
        context.push()
        made.append((host, context))
        account, (audience,) = emulator.add_account_with_audiences("Host shop", "Everyone")
        connect(host, account.api_key, audience.id, realtime=False)
        return Shop(host, emulator, audience.id)

    yield build
    for host, context in reversed(made):
        context.pop()
        drop_host(host)


def archive_once_listed(
    emulator: MailchimpEmulator, audience: str, email: str, status: str | None
) -> None:
    """Someone archives *email* in Mailchimp right after a read of the audience's members
    of *status* (``None``: the unfiltered list) has shown it: between two reads of a run.

    The run reads its statuses side by side, so the read of the archived waits until
    *email* is archived (at most 10 s): otherwise it could come back first, before there
    was anything to see. Set up before the emulator's first request (Flask takes no hooks
    after it)."""
    done: list[bool] = []
    archived = threading.Event()

    @emulator.wsgi_app.before_request
    def wait_for_the_archive() -> None:
        member = emulator.state.member(audience, email)
        if request.args.get("status") == "archived" and member is not None and not member.archived:
            archived.wait(timeout=10)

    @emulator.wsgi_app.after_request
    def archive(response: Any) -> Any:
        if (
            not done
            and request.method == "GET"
            and request.path.endswith(f"/lists/{audience}/members")
            and request.args.get("status") == status
            and email in response.get_data(as_text=True)
        ):
            done.append(True)
            with emulator.state.lock:
                member = emulator.state.member(audience, email)
                member.archived, member.last_changed = True, now()
            archived.set()
        return response


# -- 1. A member seen twice in one run's reads ---------------------------------------------


@pytest.mark.parametrize("when", ["first-sync", "later-sync"])
def test_a_member_archived_between_two_reads_of_one_sync_does_not_stop_it(
    make_shop, emulator, when
):
    """A member shows up twice in one run's reads: in the unfiltered list (first Sync) or
    among the unsubscribes (a later one), and again among the archived, because someone
    archived them in Mailchimp meanwhile. The Sync still finishes and sends the shop's
    contacts; the stranger stays archived and is not the shop's."""
    shop = make_shop("row")
    stranger = "stranger@mailbox.io"
    shop.add("Patron", "ann@mailbox.io")
    if when == "first-sync":
        archive_once_listed(emulator, shop.audience, stranger, status=None)
        emulator.state.add_member(shop.audience, stranger, "subscribed")
    else:
        archive_once_listed(emulator, shop.audience, stranger, status="unsubscribed")
        assert shop.sync().state == "done"
        emulator.state.add_member(shop.audience, stranger, "unsubscribed")
        shop.add("Patron", "bob@mailbox.io")
    run = shop.sync()
    assert (run.state, run.error) == ("done", None)
    assert shop.status("ann@mailbox.io") == "subscribed"
    assert shop.status("bob@mailbox.io") == (None if when == "first-sync" else "subscribed")
    assert shop.status(stranger) == "archived"
    State = shop.host.mailchimp.models.MemberState
    known = shop.session.execute(sa.select(State).filter_by(email=stranger)).scalars().all()
    assert [(s.status, s.sent) for s in known] == [("archived", False)]


# -- 2. A contact moving onto an address the shop knows --------------------------------------


def test_moving_onto_an_opted_out_contacts_address_is_delivered(make_shop):
    """Ann (consenting) takes the address of Bea, who opted out and whose member state the
    shop knows. The member moves to that address, the delivery finishes, and later
    changes (Cal deleted) still flow."""
    shop = make_shop("row")
    ann = shop.add("Patron", "ann@mailbox.io")
    shop.add("Patron", "bea@mailbox.io", opt_in=False)
    cal = shop.add("Patron", "cal@mailbox.io")
    shop.first_sync()
    shop.host.set_email(ann, "bea@mailbox.io")
    shop.settle()
    shop.host.delete(cal)
    shop.settle()
    assert {
        email: shop.status(email)
        for email in ("ann@mailbox.io", "bea@mailbox.io", "cal@mailbox.io")
    } == {"ann@mailbox.io": None, "bea@mailbox.io": "subscribed", "cal@mailbox.io": "archived"}
    assert shop.undelivered() == []
    run = shop.sync()
    assert (run.state, run.error) == ("done", None)


# -- 3. A member who joined through a Mailchimp form -------------------------------------------


@pytest.mark.parametrize("change", ["deleted", "flag-off"])
@pytest.mark.parametrize("shape", ["row", "path", "callable"])
def test_a_form_sign_up_the_shop_updated_is_never_archived_by_the_shop(make_shop, shape, change):
    """Fay joined through a Mailchimp form before the shop sent her; the shop's first Sync
    updated her (its tag). When the shop deletes her contact or turns its flag off, she
    stays subscribed: the shop never archives members it did not create."""
    shop = make_shop(shape)
    shop.emulator.state.add_member(shop.audience, "fay@mailbox.io", "subscribed")
    fay = shop.add("Patron", "fay@mailbox.io")
    shop.first_sync()
    assert (shop.status("fay@mailbox.io"), shop.tags("fay@mailbox.io")) == (
        "subscribed",
        ["Customer"],
    )
    if change == "deleted":
        shop.host.delete(fay)
    else:
        shop.host.set_flag(fay, False)
    shop.settle()
    assert shop.status("fay@mailbox.io") == "subscribed"
    assert shop.undelivered() == []


# -- 4. An unsubscribe, then a new address ---------------------------------------------------


@pytest.mark.parametrize("shape", ["row", "path", "callable"])
def test_a_new_address_keeps_the_unsubscribe_of_the_person(make_shop, shape):
    """Pat unsubscribes in Mailchimp; before any reconcile the shop edits Pat's address.
    Nobody is subscribed at either address, and reconcile turns Pat's flag off."""
    shop = make_shop(shape)
    pat = shop.add("Supplier", "pat@mailbox.io")
    shop.first_sync()
    shop.emulator.state.set_status(shop.audience, "pat@mailbox.io", "unsubscribed")
    shop.host.set_email(pat, "pat.new@mailbox.io")
    shop.settle()
    reconcile(shop.host.mailchimp)
    shop.session.commit()
    shop.session.expire_all()
    statuses = {email: shop.status(email) for email in ("pat@mailbox.io", "pat.new@mailbox.io")}
    assert not set(statuses.values()) & ACTIVE, statuses
    assert shop.host.flag(pat) is False


# -- 5. One address, two spellings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("patron", "supplier"),
    [
        ("zed@mailbox.io", "Zed@mailbox.io\n"),
        ("álvaro@correo.es", "ÁLVARO@correo.es"),
        # Python's lower() writes a word's last capital sigma as the final form (U+03C2),
        # SQL's lower() (PostgreSQL's too) as U+03C3: one identity in Python, two in SQL.
        ("οδυσσεας@mail.gr", "ΟΔΥΣΣΕΑΣ@mail.gr"),
    ],
    ids=["whitespace", "non-ascii-case", "final-sigma"],
)
@pytest.mark.parametrize("shape", ["row", "path"])
def test_turning_one_spelling_off_keeps_the_member_the_other_consents_to(
    make_shop, shape, patron, supplier
):
    """A Patron and a Supplier share one address spelled two ways. Turning the Patron's
    flag off leaves the member subscribed, with only the Supplier's tag."""
    shop = make_shop(shape)
    person = shop.add("Patron", patron)
    shop.add("Supplier", supplier)
    shop.first_sync()
    assert shop.tags(patron) == ["Consignor", "Customer"]
    shop.host.set_flag(person, False)
    shop.settle()
    assert (shop.status(patron), shop.tags(patron)) == ("subscribed", ["Consignor"])
    run = shop.sync()
    assert run.state == "done"
    assert (shop.status(patron), shop.tags(patron)) == ("subscribed", ["Consignor"])


# -- 6. New contacts in real time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "model"),
    [
        ("row", "Patron"),
        ("path", "Patron"),
        ("callable", "Patron"),
        ("row", "Supplier"),
        ("callable", "Supplier"),
    ],
)
def test_a_new_contact_with_consent_is_subscribed_without_a_sync(make_shop, shape, model):
    """After the first Sync, with real time on, a new contact with consent (its flag on
    its own row, or read by a callable) reaches Mailchimp by itself."""
    shop = make_shop(shape)
    shop.add("Patron", "ann@mailbox.io")
    shop.first_sync()
    shop.add(model, "new@mailbox.io")
    shop.settle()
    assert shop.status("new@mailbox.io") == "subscribed"
    assert shop.undelivered() == []


# -- 7. A flag read by a callable from a related row -----------------------------------------


def test_an_opt_out_on_the_related_row_a_callable_reads_archives_the_member(make_shop):
    """The consignor's flag is read by a callable from its SupplierPrefs row: turning it
    off there archives the member in real time."""
    shop = make_shop("callable")
    sue = shop.add("Supplier", "sue@mailbox.io")
    shop.first_sync()
    assert shop.status("sue@mailbox.io") == "subscribed"
    shop.host.set_flag(sue, False)
    shop.settle()
    assert shop.status("sue@mailbox.io") == "archived"


# -- 8. A change committed while a Sync sends -------------------------------------------------


def test_a_change_committed_during_a_sync_is_still_delivered(make_shop, tmp_path):
    """A flag-off is flushed (its outbox row written) before a Sync starts and committed
    while the Sync sends. The Sync did not see it, so the change stays to be delivered:
    after the Sync and a drain, the member is archived."""
    if not database_url(tmp_path).startswith("postgresql"):
        pytest.skip("needs two concurrent transactions: PostgreSQL (TEST_DATABASE_URL)")
    shop = make_shop("row")
    host = shop.host
    ann = shop.add("Patron", "ann@mailbox.io")
    shop.first_sync()
    # Added by SQL, as a bulk import would: no outbox row; the next Sync sends it.
    shop.session.execute(sa.insert(host.Patron).values(email="imp@mailbox.io", opt_in=True))
    shop.session.commit()

    other = host.db.session.session_factory()  # another request's transaction
    try:
        other.get(host.Patron, ann.id).opt_in = False
        other.flush()  # the outbox row is written now, before the Sync starts

        def commit_while_sending(app: Any, **_kwargs: Any) -> None:
            if other.in_transaction():
                other.commit()

        with signals.member_upserted.connected_to(commit_while_sending, sender=host.app):
            run = shop.sync()
        assert not other.in_transaction(), "the Sync sent nothing: the test timed nothing"
    finally:
        other.close()
    assert (run.state, shop.status("imp@mailbox.io")) == ("done", "subscribed")
    shop.settle()
    drain(host)
    shop.settle()
    assert shop.status("ann@mailbox.io") == "archived"
    assert shop.undelivered() == []


# -- 9. A delivery reaching a contact through its old member ----------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_a_contact_found_through_its_old_member_does_not_decide_its_new_address_alone(
    make_shop, shape
):
    """Pat (no flag) moved from Cy's address to Zed's, where Zoe consents; Cy had
    unsubscribed, so Pat stays linked to Cy's member. When Sam moves onto Cy's address,
    the delivery finds Pat through that link: Zed's address is decided with Zoe too, and
    stays subscribed (found with Pat alone, it was archived)."""
    shop = make_shop(shape)
    shop.first_sync()
    pat = shop.add("Patron", "cy@shop-mail.org", opt_in=False)
    shop.add("Supplier", "cy@shop-mail.org")
    shop.settle()
    assert shop.status("cy@shop-mail.org") == "subscribed"
    sam = shop.add("Supplier", "alvaro@correo.es")
    shop.host.set_email(pat, "zed@mailbox.io")
    shop.emulator.state.set_status(shop.audience, "cy@shop-mail.org", "unsubscribed")
    shop.add("Patron", "zed@mailbox.io")  # Zoe
    shop.settle()
    assert drain(shop.host).error is None
    assert shop.status("zed@mailbox.io") == "subscribed"
    shop.host.set_email(sam, "cy@shop-mail.org")
    shop.settle()
    assert drain(shop.host).error is None
    assert shop.status("zed@mailbox.io") == "subscribed"
    assert shop.status("cy@shop-mail.org") == "unsubscribed"


# -- A host whose model_class adds an id and timestamps ----------------------------------------


def test_a_sync_of_a_host_whose_base_model_adds_ids_and_timestamps(make_shop):
    """A host whose model_class gives every table an id and NOT NULL timestamps: its Sync
    runs to the end and adds its contacts."""
    shop = make_shop("based")
    shop.add("Patron", "ann@mailbox.io")
    shop.add("Supplier", "sam@mailbox.io")
    shop.add("Patron", "no@mailbox.io", opt_in=False)
    run = shop.sync()
    assert (run.state, run.error) == ("done", None)
    assert {e: m.visible_status for e, m in shop.emulator.state.members(shop.audience).items()} == {
        "ann@mailbox.io": "subscribed",
        "sam@mailbox.io": "subscribed",
    }
