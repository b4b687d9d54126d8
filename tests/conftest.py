from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app
from example_app.models import db as shop_db
from flask_mailchimp_sync.client import USER_AGENT
from flask_mailchimp_sync.testing import MailchimpEmulator, stop_jobs, wait_for_jobs
from flask_mailchimp_sync.testing.emulator import Account, Audience

from .helpers import (
    NOTES,
    PAGE,
    PLUGIN_REQUESTS,
    PUBLIC,
    RedisServer,
    add_customer,
    connect_shop,
    csrf_token,
    sync,
)
from .hosts import SHAPES, drop_host, make_host
from .hosts import connect as connect_host


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in NOTES:
        terminalreporter.write_line(note)


def database_url(tmp_path: Any) -> str:
    """SQLite in a temporary folder, or the database TEST_DATABASE_URL names."""
    return os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{tmp_path}/shop.db"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str | None]:
    """A real redis-server on loopback when the machine has one (CI installs it)."""
    if RedisServer.binary is None:
        NOTES.append("redis-server is not installed here: the RQ tests used fakeredis.")
        yield None
        return
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def emulator() -> Iterator[MailchimpEmulator]:
    with MailchimpEmulator() as mailchimp:
        yield mailchimp
    PLUGIN_REQUESTS.extend(
        r
        for r in mailchimp.state.requests
        if r["user_agent"] == USER_AGENT and r["body"] is not None
    )


@dataclass
class MailchimpAccount:
    account: Account
    consignors: Audience
    customers: Audience

    @property
    def api_key(self) -> str:
        return self.account.api_key


@pytest.fixture
def mailchimp_account(emulator: MailchimpEmulator) -> MailchimpAccount:
    account, (consignors, customers) = emulator.add_account_with_audiences(
        "Marigold Consignment", "Consignors", "Customers"
    )
    return MailchimpAccount(account, consignors, customers)


@pytest.fixture
def app(emulator: MailchimpEmulator, tmp_path: Any) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": database_url(tmp_path),
            "MAILCHIMP_SYNC_API_URL": emulator.api_url,
            # Long: under load a slow answer taken for a lost one is sent again, and
            # shifts counts (a batch of adds retried comes back "updated"). Tests of
            # timeouts set a short one of their own.
            "MAILCHIMP_SYNC_TIMEOUT": 30.0,
            "MAILCHIMP_SYNC_RETRY_BACKOFF": 0.01,
        }
    )
    with app.app_context():
        shop_db.create_all()
    yield app
    stop_jobs(app)  # no background job may outlive the test's database
    with app.app_context():
        shop_db.session.remove()
        shop_db.drop_all()
        shop_db.engine.dispose()  # close pooled connections (PostgreSQL keeps them open)


@pytest.fixture
def db(app: Flask) -> Iterator[Any]:
    """The shop's db, inside an app context for the whole test.

    Tests that also make requests use ``with app.app_context()`` blocks instead: a
    request would reuse a context held open here, and with it ``g`` (and a stale CSRF
    token) from the previous request.
    """
    with app.app_context():
        yield shop_db


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def staff_client(app: Flask, client: FlaskClient) -> FlaskClient:
    """A test client logged in as shop staff."""
    from example_app.models import Staff

    with app.app_context():
        staff = Staff(email="tester@marigold.shop", name="Staff")
        staff.set_password("pw")
        shop_db.session.add(staff)
        shop_db.session.commit()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"email": "tester@marigold.shop", "password": "pw", "csrf_token": token}
    )
    assert response.status_code == 302
    return client


@pytest.fixture
def shared(db, mailchimp_account):
    """The recommended setup: both roles in one audience, told apart by tags."""
    audience = mailchimp_account.customers.id
    connect_shop(mailchimp_account.api_key, {"consignor": audience, "customer": audience})
    return audience


@pytest.fixture(params=SHAPES)
def host_shop(request, tmp_path, emulator):
    """A host shop of each shape (see :mod:`.hosts`), both roles in one audience:
    (host, audience id), in the host's app context."""
    host = make_host(request.param, database_url(tmp_path), emulator.api_url)
    account, (audience,) = emulator.add_account_with_audiences("Host", "Everyone")
    with host.app.app_context():
        connect_host(host, account.api_key, audience.id, realtime=False)
        yield host, audience.id
    drop_host(host)


@pytest.fixture
def hooked(app, mailchimp_account):
    """Connected with a public URL (so a webhook is registered), Ben synced, real time on."""
    app.config["MAILCHIMP_SYNC_PUBLIC_URL"] = PUBLIC
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app import mailchimp
        from example_app.models import db
        from flask_mailchimp_sync.connection import register_webhooks

        connect_shop(
            mailchimp_account.api_key, {"consignor": audience, "customer": audience}, realtime=True
        )
        assert register_webhooks(mailchimp) is None
        sync()  # the staff's first Sync: real-time deliveries start after it
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        wait_for_jobs(app)
        secret = mailchimp.settings_store().get().webhook_secret
    return audience, f"{PAGE}webhook/{secret}"
