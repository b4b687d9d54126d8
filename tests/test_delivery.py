"""Real-time delivery as its own lean path: what it costs, when it starts, where it shows."""

from __future__ import annotations

import re

import pytest

from flask_mailchimp_sync.client import USER_AGENT
from flask_mailchimp_sync.testing import wait_for_jobs

from .conftest import database_url
from .helpers import add_opted_in_customers, csrf_token
from .helpers import sync as example_sync
from .hosts import connect, drop_host, make_host, sync

PAGE = "/preferences/integrations/mailchimp/"


def plugin_requests(emulator, since: int) -> tuple[list[str], list[str]]:
    """The plugin's (writes, reads) since request number *since*."""
    ours = [r for r in emulator.state.requests[since:] if r["user_agent"] == USER_AGENT]
    writes = [f"{r['method']} {r['path']}" for r in ours if r["method"] != "GET"]
    reads = [f"GET {r['path']}" for r in ours if r["method"] == "GET"]
    return writes, reads


@pytest.fixture(params=["row", "path", "callable"])
def synced_shop(request, tmp_path, emulator):
    """A host shop of each shape: ten patrons and a supplier, synced once, real time on."""
    host = make_host(request.param, database_url(tmp_path), emulator.api_url)
    account, (audience,) = emulator.add_account_with_audiences("Host", "Everyone")
    with host.app.app_context():
        connect(host, account.api_key, audience.id, realtime=True)
        patrons = [host.add_patron(f"p{n}@mailbox.io") for n in range(10)]
        supplier = host.add_supplier("sam@mailbox.io")
        assert sync(host).added == 11
        wait_for_jobs(host.app)
        yield host, audience.id, patrons, supplier
    drop_host(host)


def test_one_flag_flip_is_one_write_and_no_read(synced_shop, emulator):
    host, audience, _patrons, supplier = synced_shop
    before = len(emulator.state.requests)
    host.set_flag(supplier, False)
    wait_for_jobs(host.app)
    writes, reads = plugin_requests(emulator, before)
    assert (len(writes), reads) == (1, [])
    assert emulator.state.member(audience, "sam@mailbox.io").visible_status == "archived"


def test_ten_flips_in_one_burst_are_at_most_two_writes(synced_shop, emulator):
    host, audience, patrons, _supplier = synced_shop
    before = len(emulator.state.requests)
    for patron in patrons:
        patron.opt_in = False
    host.db.session.commit()
    wait_for_jobs(host.app)
    writes, _reads = plugin_requests(emulator, before)
    assert 1 <= len(writes) <= 2, writes
    held = emulator.state.members(audience)
    assert all(held[f"p{n}@mailbox.io"].visible_status == "archived" for n in range(10))


def test_nothing_is_sent_before_the_first_sync_then_real_time_runs_by_itself(
    app, staff_client, emulator, mailchimp_account
):
    """200 changes captured before connecting; Connect and saving audiences send none."""
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        add_opted_in_customers(db, 200)
    before = len(emulator.state.requests)
    page = staff_client.get(PAGE).get_data(as_text=True)
    response = staff_client.post(
        PAGE + "connect",
        data={"api_key": mailchimp_account.api_key, "csrf_token": csrf_token(page)},
    )
    assert response.status_code == 302
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Real-time updates start after the first Sync" in page
    response = staff_client.post(
        PAGE + "audiences",
        data={
            "csrf_token": csrf_token(page),
            "role0_audience": "",  # consignors: not synced
            "role0_tag": "Consignor",
            "role1_audience": audience,
            "role1_tag": "Customer",
            "realtime": "y",  # the one settings form: an unticked box turns it off
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    wait_for_jobs(app)
    writes, _reads = plugin_requests(emulator, before)
    assert writes == [] and emulator.state.members(audience) == {}

    with app.app_context():
        run = example_sync()
        assert (run.state, run.added) == ("done", 200)
        from example_app.models import Customer, db

        customer = db.session.query(Customer).filter_by(email="c7@mailbox.shop").one()
        customer.preferences.accepts_marketing = False
        db.session.commit()
    wait_for_jobs(app)
    assert emulator.state.member(audience, "c7@mailbox.shop").visible_status == "archived"
    assert "Real-time updates start after" not in staff_client.get(PAGE).get_data(as_text=True)


def test_deliveries_are_not_runs_and_the_panel_shows_them(
    app, staff_client, emulator, mailchimp_account
):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import Customer, CustomerPreferences, db

        from .helpers import connect_shop

        connect_shop(mailchimp_account.api_key, {"customer": audience}, realtime=True)
        add_opted_in_customers(db, 3)
        example_sync()
        db.session.query(Customer).filter_by(
            email="c1@mailbox.shop"
        ).one().preferences = CustomerPreferences(accepts_marketing=False)
        db.session.add(
            Customer(
                email="shop@example.com",  # Mailchimp calls it fake
                preferences=CustomerPreferences(accepts_marketing=True),
            )
        )
        db.session.commit()
    wait_for_jobs(app)

    runs = staff_client.get(PAGE + "runs").get_data(as_text=True)
    assert runs.count('href="/preferences/integrations/mailchimp/runs/') == 1  # the Sync only
    page = staff_client.get(PAGE).get_data(as_text=True)
    panel = page[page.index("mailchimp-sync-deliveries") :]
    assert 'data-count="archived">1<' in panel
    # Named and linked to the customer's page, where staff can fix the address.
    assert re.search(r'failed: <a href="/customers/\d+">shop@example.com</a> — ', panel)
    assert "looks fake" in panel


def test_an_email_change_is_one_move_and_nothing_else(synced_shop, emulator):
    host, audience, _patrons, supplier = synced_shop
    before = len(emulator.state.requests)
    host.set_email(supplier, "Sam.Smith@newmail.io ")
    wait_for_jobs(host.app)
    writes, reads = plugin_requests(emulator, before)
    # One read: the person's member as Mailchimp holds it now (did they unsubscribe?).
    assert [w.split()[0] for w in writes] == ["PATCH"] and len(reads) == 1
    held = emulator.state.members(audience)
    assert "sam@mailbox.io" not in held
    assert held["sam.smith@newmail.io"].visible_status == "subscribed"
