"""No member address, name, API key or webhook secret reaches the log at INFO."""

from __future__ import annotations

import logging

import pytest

from flask_mailchimp_sync import RedactSecrets
from flask_mailchimp_sync.logs import redact
from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import PAGE, PUBLIC, add_consignor, add_customer, csrf_token, make_host, sync
from .test_webhooks import PROFILE, UNSUBSCRIBE, UPEMAIL, body

PEOPLE = ["ben@mailbox.shop", "Ben", "Baker", "cleo@mailbox.shop", "Cleo", "Chen",
          "ben.baker@fastpost.net", "Benjamin"]  # fmt: skip


def test_a_sync_and_webhooks_at_info_log_no_person_and_no_secret(
    app, staff_client, client, emulator, mailchimp_account, caplog
):
    caplog.set_level(logging.INFO)
    app.config["MAILCHIMP_SYNC_PUBLIC_URL"] = PUBLIC
    audience = mailchimp_account.customers.id
    token = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    staff_client.post(
        PAGE + "connect",
        data={"csrf_token": token, "api_key": mailchimp_account.api_key,
              "role0_audience_id": audience, "role1_audience_id": audience},
    )  # fmt: skip
    from example_app import mailchimp
    from example_app.models import db

    with app.app_context():
        settings = mailchimp.settings_store().get()
        secret, settings.profile_updates = settings.webhook_secret, True
        db.session.commit()
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        add_consignor(db, "Cleo Chen", "cleo@mailbox.shop")
        wait_for_jobs(app)
        assert sync(full=True).state == "done"
    assert secret and emulator.state.member(audience, "cleo@mailbox.shop") is not None
    url = f"{PAGE}webhook/{secret}"
    moved = dict(UNSUBSCRIBE, **{"data[email]": "ben.baker@fastpost.net"})
    for event in (body(PROFILE, audience), body(UPEMAIL, audience), body(moved, audience),
                  body(UNSUBSCRIBE, "otherlist1")):  # fmt: skip
        assert client.post(url, data=event).status_code == 200
    wait_for_jobs(app)
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "for an audience the shop does not sync" in logged  # INFO was captured
    for secret_or_person in [*PEOPLE, mailchimp_account.api_key.split("-")[0], secret]:
        assert secret_or_person not in logged


@pytest.fixture
def mailchimp3_logger():
    logger = logging.getLogger("mailchimp3.client")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_mailchimp3_is_quieted_unless_the_host_configured_it(tmp_path, mailchimp3_logger):
    mailchimp3_logger.setLevel(logging.NOTSET)
    app, _db, mailchimp = make_host(tmp_path, "quiet")
    mailchimp.init_app(app)
    assert mailchimp3_logger.level == logging.WARNING
    mailchimp3_logger.setLevel(logging.DEBUG)  # the host wants to see every request
    app, _db, mailchimp = make_host(tmp_path, "loud")
    mailchimp.init_app(app)
    assert mailchimp3_logger.level == logging.DEBUG


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("key 0123456789abcdef0123456789abcdef-us21 refused", "key ••••-us21 refused"),
        ("POST https://shop.example/mc/webhook/Ab_9-xY?x=1", "POST https://shop.example/mc/webhook/••••?x=1"),
        ("moved ben.baker@fastpost.net to <b@mailbox.shop>", "moved •••@fastpost.net to <•••@mailbox.shop>"),
        ("GET /3.0/lists/a1b2c3d4e5/webhooks/8a25ff1d98", "GET /3.0/lists/a1b2c3d4e5/webhooks/8a25ff1d98"),
    ],
)  # fmt: skip
def test_redact(text, shown):
    assert redact(text) == shown


def test_the_extensions_lines_and_tracebacks_are_redacted(app, caplog):
    caplog.set_level(logging.INFO)
    log = logging.getLogger("flask_mailchimp_sync.engine.runner")
    assert any(isinstance(f, RedactSecrets) for f in log.filters)
    try:
        raise ValueError("no member ben@mailbox.shop")
    except ValueError:
        log.exception("run failed for %s", "cleo@mailbox.shop")
    assert "ben@" not in caplog.text and "cleo@" not in caplog.text
    assert "run failed for •••@mailbox.shop" in caplog.text
    assert "no member •••@mailbox.shop" in caplog.text
