"""Mailchimp -> shop: webhook events, registration, reconcile and the status shown to staff."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import (
    PAGE,
    PUBLIC,
    add_consignor,
    add_customer,
    connect_shop,
    csrf_token,
    sync,
    writes,
)

# The example bodies of ../shared/mailchimp/FACTS.md, with our audience and addresses.
UNSUBSCRIBE = {
    "type": "unsubscribe", "fired_at": "2009-03-26 21:40:57", "data[action]": "unsub",
    "data[reason]": "manual", "data[id]": "8a25ff1d98", "data[list_id]": "{list_id}",
    "data[email]": "ben@mailbox.shop", "data[email_type]": "html",
    "data[merges][EMAIL]": "ben@mailbox.shop", "data[merges][FNAME]": "Mailchimp",
    "data[merges][LNAME]": "API", "data[merges][INTERESTS]": "Group1,Group2",
    "data[ip_opt]": "10.20.10.30", "data[campaign_id]": "cb398d21d2",
}  # fmt: skip
CLEANED = {
    "type": "cleaned", "fired_at": "2009-03-26 22:01:00", "data[list_id]": "{list_id}",
    "data[campaign_id]": "4fjk2ma9xd", "data[reason]": "hard", "data[email]": "ben@mailbox.shop",
}  # fmt: skip
UPEMAIL = {
    "type": "upemail", "fired_at": "2009-03-26 22:15:09", "data[list_id]": "{list_id}",
    "data[new_id]": "51da8c3259", "data[new_email]": "ben.baker@fastpost.net",
    "data[old_email]": "ben@mailbox.shop",
}  # fmt: skip
PROFILE = {
    "type": "profile", "fired_at": "2009-03-26 21:31:21", "data[id]": "8a25ff1d98",
    "data[list_id]": "{list_id}", "data[email]": "ben@mailbox.shop", "data[email_type]": "html",
    "data[merges][EMAIL]": "ben@mailbox.shop", "data[merges][FNAME]": "Benjamin",
    "data[merges][LNAME]": "Baker", "data[ip_opt]": "10.20.10.30",
}  # fmt: skip


def body(template, list_id):
    return {key: value.replace("{list_id}", list_id) for key, value in template.items()}


def flag(app, email="ben@mailbox.shop"):
    from example_app.models import Customer, db

    with app.app_context():
        customer = db.session.query(Customer).filter_by(email=email).one_or_none()
        return None if customer is None else customer.preferences.accepts_marketing


def outbox_count(app):
    from example_app import mailchimp

    with app.app_context():
        return mailchimp.db.session.query(mailchimp.models.Outbox).count()


def test_the_webhook_is_registered_on_connect_with_the_right_events(emulator, hooked):
    audience, url = hooked
    (hook,) = emulator.state.audiences[audience].webhooks.values()
    assert hook["url"] == PUBLIC + url
    assert hook["events"] == {"unsubscribe": True, "cleaned": True, "upemail": True, "profile": True,
                              "subscribe": False, "campaign": False}  # fmt: skip
    assert hook["sources"] == {"user": True, "admin": True, "api": False}


def test_mailchimps_validation_get_is_answered(client, hooked):
    _audience, url = hooked
    response = client.get(url, headers={"User-Agent": "MailChimp.com WebHook Validator"})
    assert response.status_code == 200


@pytest.mark.parametrize("wrong", ["nope", "", "x" * 43])
def test_a_wrong_secret_is_404_and_changes_nothing(app, client, emulator, hooked, wrong):
    audience, _url = hooked
    response = client.post(f"{PAGE}webhook/{wrong}", data=body(UNSUBSCRIBE, audience))
    assert response.status_code == 404
    assert flag(app) is True


def test_unsubscribe_turns_the_flag_off_without_an_archive_echo(app, client, emulator, hooked):
    audience, url = hooked
    emulator.state.set_status(audience, "ben@mailbox.shop", "unsubscribed")  # as Mailchimp did
    before, queued = len(emulator.state.requests), outbox_count(app)
    response = client.post(url, data=body(UNSUBSCRIBE, audience))
    assert response.status_code == 200
    wait_for_jobs(app)
    assert flag(app) is False
    assert outbox_count(app) == queued  # the change is not queued for Mailchimp at all
    assert writes(emulator, before) == []  # no archive, nothing sent back
    assert emulator.state.member(audience, "ben@mailbox.shop").status == "unsubscribed"


def test_cleaned_turns_the_flag_off(app, client, emulator, hooked):
    audience, url = hooked
    assert client.post(url, data=body(CLEANED, audience)).status_code == 200
    assert flag(app) is False


def test_a_repeated_delivery_is_harmless(app, client, emulator, hooked):
    audience, url = hooked
    for _ in range(3):
        assert client.post(url, data=body(UNSUBSCRIBE, audience)).status_code == 200
    wait_for_jobs(app)
    assert flag(app) is False


def test_staff_ticking_the_flag_back_on_does_not_resubscribe(
    app, client, staff_client, emulator, hooked
):
    audience, url = hooked
    emulator.state.set_status(audience, "ben@mailbox.shop", "unsubscribed")
    client.post(url, data=body(UNSUBSCRIBE, audience))
    with app.app_context():
        from example_app.models import Customer, db

        ben = db.session.query(Customer).filter_by(email="ben@mailbox.shop").one()
        page = staff_client.get(f"/customers/{ben.id}").get_data(as_text=True)
    assert "Unsubscribed in Mailchimp on " in page
    staff_client.post(
        f"/customers/{ben.id}", data={"csrf_token": csrf_token(page), "accepts_marketing": "y"}
    )
    wait_for_jobs(app)
    assert flag(app) is True
    assert emulator.state.member(audience, "ben@mailbox.shop").status == "unsubscribed"


def test_upemail_updates_the_contacts_address(app, client, emulator, hooked):
    audience, url = hooked
    before = len(emulator.state.requests)
    assert client.post(url, data=body(UPEMAIL, audience)).status_code == 200
    wait_for_jobs(app)
    assert flag(app, "ben@mailbox.shop") is None and flag(app, "ben.baker@fastpost.net") is True
    assert writes(emulator, before) == []


def test_upemail_onto_an_address_another_contact_has_is_left(app, client, emulator, hooked):
    audience, url = hooked
    with app.app_context():
        from example_app.models import db

        add_customer(db, "Other", "Ben", "ben.baker@fastpost.net", opted_in=False)
    assert client.post(url, data=body(UPEMAIL, audience)).status_code == 200
    assert flag(app, "ben@mailbox.shop") is True and flag(app, "ben.baker@fastpost.net") is False


def test_upemail_onto_an_address_a_contact_has_left_is_followed(app, client, emulator, hooked):
    """Pat was last sent as the new address but has another one now (real time was off):
    nobody has the new address, so Ben follows his member there."""
    audience, url = hooked
    with app.app_context():
        from example_app import mailchimp
        from example_app.models import db

        pat = add_customer(db, "Pat", "Other", "ben.baker@fastpost.net", opted_in=False)
        wait_for_jobs(app)  # delivered: Pat is linked to that address
        mailchimp.settings_store().get().realtime = False
        pat.email = "pat@mailbox.shop"
        db.session.commit()
    assert client.post(url, data=body(UPEMAIL, audience)).status_code == 200
    assert flag(app, "ben@mailbox.shop") is None and flag(app, "ben.baker@fastpost.net") is True
    assert flag(app, "pat@mailbox.shop") is False


def test_profile_updates_names_only_when_the_option_is_on(app, client, emulator, hooked):
    from example_app.models import Customer, db

    audience, url = hooked
    client.post(url, data=body(PROFILE, audience))
    with app.app_context():
        assert db.session.query(Customer).one().first_name == "Ben"
        from example_app import mailchimp

        mailchimp.settings_store().get().profile_updates = True
        db.session.commit()
    client.post(url, data=body(PROFILE, audience))
    with app.app_context():
        assert db.session.query(Customer).one().first_name == "Benjamin"


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"type": ""},
        {"type": "unsubscribe"},
        {"type": "unsubscribe", "data[list_id]": "x"},
        {"type": "upemail", "data[list_id]": "x", "data[old_email]": "a@b.shop"},
        {"type": "cleaned", "data[list_id]": "x", "data[email]": "a" * 300 + "@b.shop"},
    ],
)
def test_a_malformed_body_is_400(app, client, hooked, form):
    _audience, url = hooked
    assert client.post(url, data=form).status_code == 400
    assert flag(app) is True


@pytest.mark.parametrize("kind", ["subscribe", "campaign", "teapot"])
def test_unknown_or_unused_events_are_ignored_with_200(app, client, hooked, kind):
    audience, url = hooked
    assert (
        client.post(
            url, data={"type": kind, "data[list_id]": audience, "data[email]": "ben@mailbox.shop"}
        ).status_code
        == 200
    )
    assert flag(app) is True


def test_unknown_list_or_email_is_ignored(app, client, hooked):
    audience, url = hooked
    assert client.post(url, data=body(UNSUBSCRIBE, "otherlist1")).status_code == 200
    other = dict(body(UNSUBSCRIBE, audience), **{"data[email]": "nobody@mailbox.shop"})
    assert client.post(url, data=other).status_code == 200
    assert flag(app) is True


KEYS = st.sampled_from(
    ["type", "fired_at", "data[list_id]", "data[email]", "data[old_email]", "data[new_email]",
     "data[merges][FNAME]", "data[merges][LNAME]", "data[reason]", "data[id]", "data", "data[]", "x"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(
        ["unsubscribe", "cleaned", "upemail", "profile", "subscribe", "ben@mailbox.shop", ""]
    ),
    st.text(max_size=300),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(form=st.dictionaries(KEYS, VALUES, max_size=8))
def test_no_form_body_makes_a_500(client, hooked, form):
    audience, url = hooked
    if form.get("data[list_id]") == "{list_id}":
        form["data[list_id]"] = audience
    assert client.post(url, data=form).status_code in (200, 400)


def test_rotating_the_secret_re_registers_and_retires_the_old_url(
    app, client, staff_client, emulator, hooked
):
    audience, old_url = hooked
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "registered on 1 audience(s)" in page
    response = staff_client.post(PAGE + "webhook-secret", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    (hook,) = emulator.state.audiences[audience].webhooks.values()
    assert hook["url"] != PUBLIC + old_url and hook["url"].startswith(PUBLIC + PAGE + "webhook/")
    assert client.post(old_url, data=body(UNSUBSCRIBE, audience)).status_code == 404
    new_url = hook["url"].removeprefix(PUBLIC)
    assert client.post(new_url, data=body(UNSUBSCRIBE, audience)).status_code == 200
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Last message from Mailchimp: <strong>unsubscribe at " in page


def test_disconnect_removes_the_webhook(app, staff_client, emulator, hooked):
    audience, _url = hooked
    page = staff_client.get(PAGE).get_data(as_text=True)
    staff_client.post(PAGE + "disconnect", data={"csrf_token": csrf_token(page), "confirm": "y"})
    assert emulator.state.audiences[audience].webhooks == {}


def test_without_a_public_url_the_page_says_reconcile_does_it(app, staff_client, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Every Sync reads who unsubscribed or bounced in Mailchimp since the last one" in page


def test_reconcile_brings_unsubscribes_made_in_mailchimp_to_the_shop(
    app, runner, emulator, mailchimp_account
):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience, "consignor": audience})
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop")
        add_consignor(db, "Cleo Chen", "cleo@mailbox.shop")
        add_customer(db, "Dev", "Diaz", "dev@mailbox.shop")
        sync()
    emulator.state.set_status(audience, "ben@mailbox.shop", "unsubscribed")  # directly in Mailchimp
    emulator.state.set_status(audience, "cleo@mailbox.shop", "cleaned")
    result = runner.invoke(args=["mailchimp", "reconcile"])
    assert result.exit_code == 0, result.output
    assert "Marketing turned off for 3 contact(s)" in result.output
    assert (
        flag(app, "ben@mailbox.shop"),
        flag(app, "cleo@mailbox.shop"),
        flag(app, "dev@mailbox.shop"),
    ) == (False, False, True)
    with app.app_context():
        from example_app.models import Consignor, db

        assert db.session.query(Consignor).one().marketing_opt_in is False
        before = len(emulator.state.requests)
        run = sync()
        assert run.archived == 0 and writes(emulator, before) == []
    assert runner.invoke(args=["mailchimp", "reconcile"]).output.startswith(
        "Marketing turned off for 0"
    )


def test_every_sync_reconciles_first(app, emulator, mailchimp_account):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience})
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        sync()
        emulator.state.set_status(audience, "ben@mailbox.shop", "unsubscribed")
        run = sync()
        assert run.blocked == 1
    assert flag(app) is False


def test_the_customer_page_shows_the_mailchimp_status(
    app, staff_client, emulator, mailchimp_account
):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience})
        ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop").id
        cleo = add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop", opted_in=False).id
    assert "Not sent to Mailchimp" in staff_client.get(f"/customers/{ben}").get_data(as_text=True)
    with app.app_context():
        sync()
    assert ">Subscribed<" in staff_client.get(f"/customers/{ben}").get_data(as_text=True)
    assert "Not sent to Mailchimp" in staff_client.get(f"/customers/{cleo}").get_data(as_text=True)
