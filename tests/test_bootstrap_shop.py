"""The extension in a shop shaped like a typical third-party one (tests/bootstrap_shop):
an app factory, its own base model, Flask-Login, a Bootstrap layout with other block
names, consent on a table added through a backref, REDIS_URL pointing at no Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from flask_mailchimp_sync.testing import stop_jobs, wait_for_jobs

from .bootstrap_shop import create_app
from .bootstrap_shop.integration import mailchimp
from .bootstrap_shop.models import User, db
from .conftest import database_url
from .helpers import csrf_token, free_port

PAGE = "/preferences/integrations/mailchimp/"


@pytest.fixture
def shop(emulator: Any, tmp_path: Any) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url(tmp_path),
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "MAILCHIMP_SYNC_API_URL": emulator.api_url,
            "MAILCHIMP_SYNC_TIMEOUT": 30.0,  # long: see conftest's app
            "MAILCHIMP_SYNC_RETRY_BACKOFF": 0.01,
        }
    )
    with app.app_context():
        db.create_all()
        staff = User(email="owner@fernfinch.shop", username="owner", is_staff=True)
        staff.set_password("pw")
        db.session.add(staff)
        db.session.add(User(email="clerk@fernfinch.shop", username="clerk", password_hash="x"))
        db.session.commit()
    wait_for_jobs(app)  # the deliveries these commits asked for (not connected: nothing)
    yield app
    stop_jobs(app)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def customer(email: str, consent: bool | None) -> Any:
    """A customer; ``None``: no consent row at all (the shop had none before Mailchimp)."""
    from .bootstrap_shop.marketing import MarketingConsent

    user = User(email=email, username=email.split("@")[0])
    if consent is not None:
        user.marketing = MarketingConsent(accepts_marketing=consent)
    db.session.add(user)
    db.session.commit()
    return user


def log_in(app: Flask, email: str = "owner@fernfinch.shop", password: str = "pw") -> FlaskClient:
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302
    return client


def post(client: FlaskClient, path: str, **data: str) -> Any:
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    return client.post(PAGE + path, data={"csrf_token": token, **data})


def connect(shop: Flask, account: Any) -> None:
    with shop.app_context():
        store = mailchimp.settings_store()
        store.save_account(account.api_key, account_id="acc", account_name="Fern & Finch")
        store.set_audience("customer", account.customers.id, name="Customers", tag="Customer")
        db.session.commit()


def test_the_page_wears_the_shops_layout_and_menu(shop):
    anonymous = shop.test_client().get(PAGE)
    assert anonymous.status_code == 302 and "/login?next=" in anonymous.location
    staff = log_in(shop)
    home = staff.get("/").get_data(as_text=True)
    assert f'<a class="nav-link" href="{PAGE}">Mailchimp</a>' in home  # the menu link
    page = staff.get(PAGE).get_data(as_text=True)
    assert "<title>Mailchimp · Integrations · Fern &amp; Finch</title>" in page
    assert f'<a class="nav-link" href="{PAGE}">Mailchimp</a>' in page  # its own menu variable
    inside = page.split('<div class="container py-4" id="page">')[1]
    assert 'id="mailchimp-sync-title">Mailchimp</h1>' in inside and "API key" in inside


def test_a_customer_who_is_not_staff_is_refused(shop):
    with shop.app_context():
        clerk = db.session.execute(sa.select(User).filter_by(username="clerk")).scalar_one()
        clerk.set_password("pw")
        db.session.commit()
    assert log_in(shop, "clerk@fernfinch.shop").get(PAGE).status_code == 403


def test_connect_and_choose_the_audience_on_the_page(shop, mailchimp_account):
    staff = log_in(shop)
    connected = post(staff, "connect", api_key=mailchimp_account.api_key)
    assert connected.status_code == 302
    page = staff.get(PAGE).get_data(as_text=True)
    assert (
        '<div class="alert alert-success">Connected to the Mailchimp account Marigold '
        "Consignment. Next: choose the audiences below.</div>" in page
    )
    saved = post(
        staff, "audiences", role0_audience=mailchimp_account.customers.id, role0_tag="Shop"
    )
    assert saved.status_code == 302
    assert (
        '<div class="alert alert-success">Settings saved. Nothing was sent yet. Next: Preview, '
        "then Sync.</div>" in staff.get(PAGE).get_data(as_text=True)
    )


def test_sync_runs_in_process_though_redis_url_points_at_no_redis(
    shop, mailchimp_account, emulator
):
    with shop.app_context():
        customer("ann@mail.shop", True)
        customer("bob@mail.shop", False)
        customer("cy@mail.shop", None)
    wait_for_jobs(shop)  # before the account is connected, real time sends nothing
    connect(shop, mailchimp_account)
    staff = log_in(shop)
    queued = post(staff, "sync", sync="Sync")
    assert "/runs/" in queued.location
    wait_for_jobs(shop)
    run_page = staff.get(queued.location).get_data(as_text=True)
    assert 'data-state="done"' in run_page
    assert '<span data-count="added">1</span> added' in run_page
    # bob said no, cy has no consent row, and the two staff users have none either
    assert '<span data-count="not_opted_in">4</span> not opted in' in run_page
    assert '<span data-count="unchanged">0</span> unchanged' in run_page
    members = emulator.state.members(mailchimp_account.customers.id)
    assert {e: m.status for e, m in members.items()} == {"ann@mail.shop": "subscribed"}


def test_without_redis_url_false_the_dead_redis_refuses_the_sync(shop, mailchimp_account):
    shop.config["MAILCHIMP_SYNC_REDIS_URL"] = None  # REDIS_URL is taken for the queue
    connect(shop, mailchimp_account)
    staff = log_in(shop)
    refused = post(staff, "sync", sync="Sync")
    assert refused.status_code == 302 and refused.location.endswith(PAGE)
    assert (
        '<div class="alert alert-warning">The sync could not be queued: Redis is unreachable.'
        in staff.get(PAGE).get_data(as_text=True)
    )


def test_real_time_changes_reach_mailchimp_and_commits_never_wait_on_redis(
    shop, mailchimp_account, emulator, caplog
):
    from .bootstrap_shop.marketing import MarketingConsent

    audience = mailchimp_account.customers.id
    with shop.app_context():
        ann = customer("ann@mail.shop", True)
        cy = customer("cy@mail.shop", None)
    wait_for_jobs(shop)
    connect(shop, mailchimp_account)
    staff = log_in(shop)
    post(staff, "sync", sync="Sync")
    wait_for_jobs(shop)
    caplog.set_level(logging.WARNING)
    with shop.app_context():
        db.session.add_all([ann, cy])
        ann.marketing.accepts_marketing = False  # the consent row, through the backref
        db.session.commit()
        cy.marketing = MarketingConsent(accepts_marketing=True)  # a new consent row
        db.session.commit()
        customer("dee@mail.shop", True)  # a new customer
        cy.email = "cy.new@mail.shop"
        db.session.commit()
    wait_for_jobs(shop)
    status = {e: m.visible_status for e, m in emulator.state.members(audience).items()}
    assert status == {
        "ann@mail.shop": "archived",
        "cy.new@mail.shop": "subscribed",
        "dee@mail.shop": "subscribed",
    }
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_cli_through_the_shops_factory(shop, mailchimp_account):
    runner = shop.test_cli_runner()
    result = runner.invoke(
        args=[
            "mailchimp", "connect", "--api-key", mailchimp_account.api_key,
            "--audience", f"customer={mailchimp_account.customers.id}",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with shop.app_context():
        customer("ann@mail.shop", True)
    result = runner.invoke(args=["mailchimp", "sync"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "2 not opted in" in result.output


def test_the_extensions_tables_ignore_the_shops_model_class(shop):
    with shop.app_context():
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("mailchimp_sync_locks")}
        assert columns == {"name", "holder", "expires_at"}
        assert "created_at" in {c["name"] for c in sa.inspect(db.engine).get_columns("users")}


def test_the_staff_pages_in_the_shops_layout_first_run_to_disconnect(
    shop, mailchimp_account, emulator
):
    """The staff pages' words and steps on this host: consent on a backref table, a
    Bootstrap layout with its own flash markup."""
    with shop.app_context():
        ann = customer("ann@mail.shop", True).id
    wait_for_jobs(shop)
    connect(shop, mailchimp_account)
    staff = log_in(shop)
    page = staff.get(PAGE).get_data(as_text=True)
    assert "Next step (3 of 4): Preview." in page and "Real-time updates start after" in page
    post(staff, "sync", sync="Sync")
    wait_for_jobs(shop)
    assert "All set." in staff.get(PAGE).get_data(as_text=True)
    with shop.app_context():
        user = db.session.get(User, ann)
        assert mailchimp.member_status(user).label == "Subscribed"
        stop_jobs(shop)  # the delivery has not landed yet
        user.marketing.accepts_marketing = False
        db.session.commit()
        assert mailchimp.member_status(user).label == "Archiving in Mailchimp…"
    asked = staff.get(PAGE + "disconnect").get_data(as_text=True)
    assert "Members stay in Mailchimp" in asked and "Your audience choices are kept" in asked
    token = csrf_token(asked)
    refused = staff.post(PAGE + "disconnect", data={"csrf_token": token})
    assert refused.status_code == 400 and "Tick the box to confirm" in refused.get_data(True)
    done = staff.post(PAGE + "disconnect", data={"csrf_token": token, "confirm": "y"})
    assert done.status_code == 302
    assert '<div class="alert alert-success">Disconnected from Mailchimp.' in staff.get(
        PAGE
    ).get_data(as_text=True)
    with shop.app_context():
        label = mailchimp.member_status(db.session.get(User, ann)).label
        assert "Subscribed" not in label and label.startswith("Not connected")
