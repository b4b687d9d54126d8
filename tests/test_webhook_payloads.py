"""Webhook bodies are validated like any other input: addresses must be addresses, names
are bounded, and what cannot be applied is acknowledged and logged, never a 500."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import add_customer, sync
from .test_webhooks import PROFILE, UNSUBSCRIBE, UPEMAIL, body, flag


def member_states(app) -> dict[str, str | None]:
    from example_app import mailchimp

    with app.app_context():
        State = mailchimp.models.MemberState
        return {s.email: s.status for s in mailchimp.db.session.query(State)}


def names(app) -> list[tuple[str, str]]:
    from example_app.models import Customer, db

    with app.app_context():
        return [(c.first_name, c.last_name) for c in db.session.query(Customer)]


def profile_updates_on(app) -> None:
    from example_app import mailchimp

    with app.app_context():
        mailchimp.settings_store().get().profile_updates = True
        mailchimp.db.session.commit()


@pytest.mark.parametrize(
    ("event", "key", "value"),
    [
        (UPEMAIL, "data[new_email]", "<script>alert('up')</script>"),
        (UPEMAIL, "data[new_email]", "ben baker@fastpost.net"),
        (UPEMAIL, "data[old_email]", "not an address"),
        (UNSUBSCRIBE, "data[email]", "ben@"),
        (PROFILE, "data[email]", "@mailbox.shop"),
    ],
)
def test_an_address_that_is_no_address_is_refused(app, client, hooked, event, key, value):
    audience, url = hooked
    response = client.post(url, data=dict(body(event, audience), **{key: value}))
    assert response.status_code == 400
    assert flag(app, "ben@mailbox.shop") is True  # nothing changed
    assert "<script>" not in str(member_states(app))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data[merges][FNAME]", "B" * 401),
        ("data[merges][LNAME]", "B" * 256),
        ("data[merges][FNAME]", "Ben\x07"),
    ],
)
def test_a_name_no_merge_field_could_hold_is_refused(app, client, hooked, key, value):
    audience, url = hooked
    profile_updates_on(app)
    response = client.post(url, data=dict(body(PROFILE, audience), **{key: value}))
    assert response.status_code == 400
    assert names(app) == [("Ben", "Baker")]


def test_names_in_other_events_never_stop_an_unsubscribe(app, client, hooked):
    audience, url = hooked
    event = dict(body(UNSUBSCRIBE, audience), **{"data[merges][FNAME]": "B" * 5000})
    assert client.post(url, data=event).status_code == 200
    assert flag(app) is False


def test_an_unsubscribe_for_an_unknown_address_is_acknowledged_not_stored(app, client, hooked):
    audience, url = hooked
    event = dict(body(UNSUBSCRIBE, audience), **{"data[email]": "newcomer@mailbox.shop"})
    assert client.post(url, data=event).status_code == 200
    assert "newcomer@mailbox.shop" not in member_states(app)
    with app.app_context():
        from example_app.models import db

        add_customer(db, "New", "Comer", "newcomer@mailbox.shop")
        wait_for_jobs(app)
        assert sync().blocked == 0  # never blocked on the word of an unknown event
    assert member_states(app)["newcomer@mailbox.shop"] == "subscribed"


def test_an_unsubscribe_for_a_known_member_without_a_contact_is_stored(
    app, client, emulator, hooked
):
    audience, url = hooked
    emulator.state.add_member(audience, "outsider@mailbox.shop", status="subscribed")
    with app.app_context():
        from example_app import mailchimp

        for role_audience in mailchimp.settings_store().get().audiences:
            role_audience.pulled_at = None  # the next sync reads every member again
        sync()
    assert member_states(app)["outsider@mailbox.shop"] == "subscribed"
    event = dict(body(UNSUBSCRIBE, audience), **{"data[email]": "outsider@mailbox.shop"})
    assert client.post(url, data=event).status_code == 200
    assert member_states(app)["outsider@mailbox.shop"] == "unsubscribed"


def test_upemail_onto_an_address_the_extension_knows_is_followed_not_a_500(
    app, client, emulator, hooked
):
    audience, url = hooked
    with app.app_context():
        from example_app.models import db

        gone = add_customer(db, "Old", "Owner", "ben.baker@fastpost.net")
        wait_for_jobs(app)
        db.session.delete(gone)
        db.session.commit()
        wait_for_jobs(app)
    assert "ben.baker@fastpost.net" in member_states(app)  # remembered, archived
    assert client.post(url, data=body(UPEMAIL, audience)).status_code == 200
    assert flag(app, "ben@mailbox.shop") is None and flag(app, "ben.baker@fastpost.net") is True
    assert member_states(app)["ben.baker@fastpost.net"] == "subscribed"  # Ben's member moved


def test_a_change_the_shops_database_refuses_is_acknowledged_and_logged(
    app, client, hooked, monkeypatch, caplog
):
    from flask_mailchimp_sync import webhooks

    def refused(*args):
        raise sa.exc.IntegrityError("UPDATE ...", {}, Exception("unique constraint"))

    audience, url = hooked
    monkeypatch.setattr(webhooks, "apply_event", refused)
    caplog.set_level(logging.INFO, logger="flask_mailchimp_sync")
    assert client.post(url, data=body(UNSUBSCRIBE, audience)).status_code == 200
    assert "the shop's database refused it" in caplog.text
    from example_app import mailchimp

    with app.app_context():
        assert mailchimp.settings_store().get().webhook_last_event == "unsubscribe"
