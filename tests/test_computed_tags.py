"""Computed tags: the shop adds and removes the tags it computes, by sync and in real
time, never touches tags it did not set, and never changes anyone's status with them."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from flask_mailchimp_sync import MergeField
from flask_mailchimp_sync.testing import wait_for_jobs

from . import hosts
from .conftest import database_url
from .helpers import add_consignor, connect_shop, sync


def tags(emulator, audience_id, email):
    return set(emulator.state.member(audience_id, email).tags)


@pytest.fixture
def live(app, runner, mailchimp_account):
    """Consignors in their audience with its fields created, synced once, real time on;
    Ada has credit and an item expiring."""
    audience = mailchimp_account.consignors.id
    with app.app_context():
        from example_app.models import Item, db

        connect_shop(mailchimp_account.api_key, {"consignor": audience}, realtime=True)
        assert runner.invoke(args=["mailchimp", "fields", "--create"]).exit_code == 0
        ada = add_consignor(db, "Ada Abbott", "ada@mailbox.shop")
        ada.credit_cents = 2500
        ada.items.append(Item(title="Lamp", price_cents=900, expires_on=date.today()))
        db.session.commit()
        sync()
        wait_for_jobs(app)
        return audience, ada.id


def test_a_credit_change_updates_credit_and_removes_the_tag_in_one_delivery(app, emulator, live):
    audience, ada_id = live
    assert tags(emulator, audience, "ada@mailbox.shop") == {
        "Consignor",
        "Has credit",
        "Items expiring",
    }
    with app.app_context():
        from example_app import mailchimp
        from example_app.models import Consignor, db

        Delivery = mailchimp.models.Delivery
        deliveries_before = db.session.query(Delivery).count()
        writes_before = len(emulator.state.write_requests())
        db.session.get(Consignor, ada_id).credit_cents = 0  # paid out
        db.session.commit()
        wait_for_jobs(app)
        deliveries = db.session.query(Delivery).order_by(Delivery.id).all()[deliveries_before:]
        assert [(d.state, d.changes, d.updated) for d in deliveries] == [("done", 1, 1)]
    member = emulator.state.member(audience, "ada@mailbox.shop")
    assert member.merge_fields["CREDIT"] == 0
    assert set(member.tags) == {"Consignor", "Items expiring"}
    assert member.status == "subscribed"
    writes = emulator.state.write_requests()[writes_before:]
    assert [(w["method"], w["path"].rsplit("/", 1)[-1]) for w in writes] == [
        ("PUT", writes[0]["path"].rsplit("/", 1)[-1]),
        ("POST", "tags"),
    ]
    assert "status" not in writes[0]["body"]  # status_if_new only: nobody's status moves
    assert writes[1]["body"] == {"tags": [{"name": "Has credit", "status": "inactive"}]}


def test_tags_staff_added_in_mailchimp_survive_every_sync(app, emulator, live):
    audience, ada_id = live
    member = emulator.state.member(audience, "ada@mailbox.shop")
    member.tags += ["VIP", "Has credit?"]  # staff's own, beside the shop's
    with app.app_context():
        from example_app.models import Consignor, db

        ada = db.session.get(Consignor, ada_id)
        ada.credit_cents = 0
        ada.items[0].expires_on = date.today() + timedelta(days=60)
        db.session.commit()
        wait_for_jobs(app)
        assert tags(emulator, audience, "ada@mailbox.shop") == {"Consignor", "VIP", "Has credit?"}
        for options in ({}, {"full": True}, {"full": True}):
            assert sync(**options).state == "done"
            assert tags(emulator, audience, "ada@mailbox.shop") == {
                "Consignor",
                "VIP",
                "Has credit?",
            }
        ada.credit_cents = 100
        db.session.commit()
        wait_for_jobs(app)
    assert tags(emulator, audience, "ada@mailbox.shop") == {
        "Consignor",
        "VIP",
        "Has credit?",
        "Has credit",
    }


def test_computed_tags_never_touch_an_unsubscribed_member(app, emulator, live):
    audience, ada_id = live
    emulator.state.member(audience, "ada@mailbox.shop").status = "unsubscribed"
    with app.app_context():
        from example_app.models import Consignor, db

        writes_before = len(emulator.state.write_requests())
        sync()  # learns the unsubscribe: the shop's flag goes off
        assert not db.session.get(Consignor, ada_id).marketing_opt_in
        db.session.get(Consignor, ada_id).credit_cents = 0
        db.session.commit()
        wait_for_jobs(app)
        sync(full=True)
    member = emulator.state.member(audience, "ada@mailbox.shop")
    assert member.status == "unsubscribed"
    assert "Has credit" in member.tags  # nothing written to a person who said no
    assert emulator.state.write_requests()[writes_before:] == []


@pytest.mark.parametrize("shape", hosts.SHAPES)
def test_typed_fields_and_tags_on_every_host_shape(shape, tmp_path, emulator):
    host = hosts.make_host(
        shape,
        database_url(tmp_path),
        emulator.api_url,
        merge_fields={"SINCE": MergeField("Customer since", "date", lambda c: date(2025, 1, 2))},
        tags=lambda c: {"Local"} if (c.email or "").endswith(".local.shop") else set(),
    )
    account, (audience,) = emulator.add_account_with_audiences("Host", "Everyone")
    try:
        with host.app.app_context():
            hosts.connect(host, account.api_key, audience.id)
            from flask_mailchimp_sync import fields

            assert [tag for _a, tag in fields.create_missing(host.mailchimp)] == ["SINCE"]
            host.add_patron("pat@shop.local.shop")
            host.add_supplier("sue@mailbox.shop")
            host.add_supplier("no@mailbox.shop", opt_in=False)
            assert hosts.sync(host).added == 2
            pat = emulator.state.member(audience.id, "pat@shop.local.shop")
            assert pat.merge_fields["SINCE"] == "2025-01-02"
            assert set(pat.tags) == {"Customer", "Local"}
            sue = emulator.state.member(audience.id, "sue@mailbox.shop")
            assert set(sue.tags) == {"Consignor"}
            assert emulator.state.member(audience.id, "no@mailbox.shop") is None

            patron = host.db.session.query(host.Patron).one()
            host.set_flag(patron, False)
            hosts.drain(host)
            assert emulator.state.member(audience.id, "pat@shop.local.shop").archived
    finally:
        hosts.drop_host(host)


def test_fields_created_after_the_first_sync_flow_in_real_time(app, runner, emulator, shop_live):
    audience, ada_id = shop_live
    assert "CREDIT" not in emulator.state.member(audience, "ada@mailbox.shop").merge_fields
    assert runner.invoke(args=["mailchimp", "fields", "--create"]).exit_code == 0
    with app.app_context():
        from example_app.models import Consignor, db

        db.session.get(Consignor, ada_id).credit_cents = 1250
        db.session.commit()
        wait_for_jobs(app)
    member = emulator.state.member(audience, "ada@mailbox.shop")
    assert member.merge_fields["CREDIT"] == 12.5
    assert "Has credit" in member.tags


@pytest.fixture
def shop_live(app, mailchimp_account):
    """Synced once before the audience had the declared fields; real time on."""
    audience = mailchimp_account.consignors.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"consignor": audience}, realtime=True)
        ada = add_consignor(db, "Ada Abbott", "ada@mailbox.shop")
        assert "CREDIT" in sync().notes
        wait_for_jobs(app)
        return audience, ada.id
