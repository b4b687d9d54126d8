"""Helpers shared by the tests."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from html import unescape
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import MailchimpSync
from flask_mailchimp_sync.engine.members import OUTCOMES

#: Every request body the plugin sent to an emulator during this test run; the spec
#: conformance test (which runs last) holds each against Mailchimp's published schemas.
PLUGIN_REQUESTS: list[dict[str, Any]] = []

#: The staff page, and the public address of shops that register a webhook.
PAGE = "/preferences/integrations/mailchimp/"
PUBLIC = "https://shop.marigold.example"

#: Said at the end of the test run (e.g. which tests fell back to a stand-in service).
NOTES: list[str] = []


def text(page: str) -> str:
    """The page's words, without tags."""
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def csrf_token(html: str) -> str:
    """The CSRF token of the (first) form on a page."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "the page has no CSRF token"
    return match.group(1)


def make_host(
    tmp_path: Any,
    name: str = "host",
    *,
    database_url: str | None = None,
    email_length: int = 255,
    key_length: int | None = None,
) -> tuple[Flask, SQLAlchemy, MailchimpSync]:
    """A bare host app with one contact model, the extension not yet registered.

    *key_length*: the contact's key is text of that length (else an integer id).
    """
    db = SQLAlchemy()

    class Customer(db.Model):  # type: ignore[name-defined]
        id = sa.Column(sa.String(key_length) if key_length else sa.Integer, primary_key=True)
        email = sa.Column(sa.String(email_length))
        opted_in = sa.Column(sa.Boolean)

    mailchimp = MailchimpSync(db=db)
    mailchimp.add_source(Customer, role="customer", email="email", marketing="opted_in")
    app = Flask(name)
    app.config.update(
        SECRET_KEY="s",
        SQLALCHEMY_DATABASE_URI=database_url or f"sqlite:///{tmp_path}/{name}.db",
    )
    db.init_app(app)
    return app, db, mailchimp


def add_consignor(
    db: Any, name: str, email: str | None, *, opted_in: bool = True, phone: str | None = None
) -> Any:
    from example_app.models import Consignor

    consignor = Consignor(name=name, email=email, marketing_opt_in=opted_in, phone=phone)
    db.session.add(consignor)
    db.session.commit()
    return consignor


def add_customer(
    db: Any, first: str, last: str, email: str | None, *, opted_in: bool = True
) -> Any:
    from example_app.models import Customer, CustomerPreferences

    customer = Customer(first_name=first, last_name=last, email=email)
    customer.preferences = CustomerPreferences(accepts_marketing=opted_in)
    db.session.add(customer)
    db.session.commit()
    return customer


def connect_shop(
    api_key: str,
    audiences: dict[str, str],
    *,
    double_opt_in: bool = False,
    realtime: bool = False,
    extension: MailchimpSync | None = None,
) -> None:
    """Connect the example shop's extension, or *extension* (needs an app context).

    Real-time delivery is off unless asked for, so a test's own syncs see every change.
    """
    from example_app import mailchimp as shop_extension

    mailchimp = extension or shop_extension
    store = mailchimp.settings_store()
    store.save_account(api_key, account_id="acc", account_name="Marigold Consignment")
    for role, audience_id in audiences.items():
        store.set_audience(role, audience_id, name=role, tag=role.title())
    store.get().double_opt_in = double_opt_in
    store.get().realtime = realtime
    mailchimp.db.session.commit()


def sync(extension: MailchimpSync | None = None, **options: Any) -> Any:
    """Run a sync (or preview) to the end, in this process; returns the run.

    Of the example shop, or of *extension*.
    """
    from example_app import mailchimp as shop_extension
    from flask_mailchimp_sync.engine.runner import SyncRunner
    from flask_mailchimp_sync.jobs import start_sync

    mailchimp = extension or shop_extension
    run = start_sync(mailchimp, enqueue=False, trigger="test", **options)
    return SyncRunner(mailchimp, run.id).execute()


def counts(run: Any) -> dict[str, int]:
    return {name: getattr(run, name) for name in OUTCOMES if getattr(run, name)}


def items(run: Any) -> dict[str, tuple[str, str]]:
    """The run's reported contacts: email (or source#key) -> (outcome, reason)."""
    from example_app import mailchimp

    Item = mailchimp.models.SyncRunItem
    rows = mailchimp.db.session.query(Item).filter_by(run_id=run.id)
    return {
        row.email or f"{row.source}#{row.contact_key}": (row.outcome, row.reason) for row in rows
    }


def members(emulator: Any, audience_id: str) -> dict[str, tuple[str, list[str], dict]]:
    """What Mailchimp holds of an audience: address -> (status, tags, merge fields)."""
    return {
        email: (m.visible_status, sorted(m.tags), m.merge_fields)
        for email, m in emulator.state.members(audience_id).items()
    }


def writes(emulator: Any, since: int = 0) -> list[dict[str, Any]]:
    """The requests that changed something in Mailchimp, from request *since* on."""
    return [r for r in emulator.state.requests[since:] if r["method"] != "GET"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A real redis-server on loopback, to start, stop and start again."""

    binary = shutil.which("redis-server")

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        assert self.binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def assert_mailchimp_matches_shop(
    emulator: Any, audience_id: str, *, outsiders: frozenset[str] = frozenset()
) -> None:
    """Every consenting contact is one subscribed member with its role tags; nobody else
    is subscribed (but *outsiders*, who joined Mailchimp another way). Needs an app context."""
    from example_app import mailchimp
    from flask_mailchimp_sync import emails

    expected: dict[str, set[str]] = {}
    for source in mailchimp.sources:
        for contact in source.iter_contacts(mailchimp.db.session):
            address = emails.normalize(contact.email)
            if contact.marketing and emails.problem(address) is None:
                expected.setdefault(address.lower(), set()).add(contact.role.title())
    held = emulator.state.members(audience_id)
    wrong = {
        email: (
            held[email].visible_status if email in held else None,
            sorted(held[email].tags) if email in held else None,
        )
        for email, tags in expected.items()
        if email not in held
        or held[email].visible_status != "subscribed"
        or set(held[email].tags) != tags
    }
    assert wrong == {}, f"members that do not match the shop: {wrong}"
    extra = {
        e for e, m in held.items() if m.visible_status == "subscribed" and e not in expected
    } - outsiders
    assert extra == set(), f"subscribed without the shop's consent: {extra}"


def add_opted_in_customers(db: Any, count: int) -> None:
    """*count* customers c0@... with marketing consent, in one commit."""
    from example_app.models import Customer, CustomerPreferences

    db.session.add_all(
        Customer(
            email=f"c{n}@mailbox.shop", preferences=CustomerPreferences(accepts_marketing=True)
        )
        for n in range(count)
    )
    db.session.commit()


def subprocess_env(app: Any, emulator: Any, **extra: str) -> dict[str, str]:
    """The environment for a `flask ...` process working on the test's shop and emulator."""
    import os
    from pathlib import Path

    env = dict(os.environ)
    env.update(
        FLASK_APP="example_app:create_app",
        SHOP_DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        SHOP_SECRET_KEY=app.config["SECRET_KEY"],
        FLASK_MAILCHIMP_SYNC_API_URL=emulator.api_url,
        FLASK_MAILCHIMP_SYNC_RETRY_BACKOFF="0.01",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        **extra,
    )
    return env


def wait_until_quiet(emulator: Any, api_key: str, *, at_least: float, quiet: float = 0.25) -> None:
    """Wait *at_least* seconds, and until the emulator has answered every request of
    *api_key* it took (none in flight, its log still for *quiet* seconds): a killed
    process's last requests may land well after the kill on a loaded machine."""
    start = time.monotonic()
    deadline = start + at_least + 30
    seen, still_since = -1, start
    while True:
        now = time.monotonic()
        if emulator.state.connections.open[api_key] or len(emulator.state.requests) != seen:
            seen, still_since = len(emulator.state.requests), now
        elif now - start >= at_least and now - still_since >= quiet:
            return
        assert now < deadline, "the emulator never went quiet"
        time.sleep(0.02)


def hold_requests_at(emulator: Any, audience_id: str, count: int) -> Any:
    """From the moment the audience holds *count* members, the emulator holds every
    request, and answers them 503 once released: by then their sender is killed, so
    nobody hears it (a kill timed by polling the count came late on a loaded machine).
    Returns (the event set when *count* is reached, the release). Set up before the
    emulator's first request."""
    holding, reached, released = threading.Event(), threading.Event(), threading.Event()
    holding.set()

    @emulator.wsgi_app.before_request
    def hold() -> Any:
        if holding.is_set() and len(emulator.state.members(audience_id)) >= count:
            reached.set()
            released.wait(timeout=60)
            return Response(status=503)
        return None

    def release() -> None:
        holding.clear()
        released.set()

    return reached, release
