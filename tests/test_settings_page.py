"""Preferences > Integrations > Mailchimp: connect, pick audiences, disconnect."""

from __future__ import annotations

import html
import logging
import re

import pytest
import requests
import responses
from flask import Flask

from .helpers import csrf_token, make_host

PAGE = "/preferences/integrations/mailchimp/"


def errors(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'role="alert">([^<]+)<', page)]


def connect(client, api_key, **audience_ids):
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    data = {"api_key": api_key, "csrf_token": token}
    data.update(
        {
            f"role{n}_audience_id": audience_ids.get(role, "")
            for n, role in enumerate(["consignor", "customer"])
        }
    )
    return client.post(PAGE + "connect", data=data)


def save_audiences(client, **fields):
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    data = {"csrf_token": token, "role0_audience": "", "role1_audience": ""}
    data.update({"role0_tag": "Consignor", "role1_tag": "Customer"} | fields)
    return client.post(PAGE + "audiences", data=data)


def stored_settings(app):
    from example_app import mailchimp

    with app.app_context():
        settings = mailchimp.settings_store().get()
        if settings is None:
            return None
        return {
            "connected": settings.is_connected,
            "account": settings.account_name,
            "ciphertext": settings.api_key_encrypted,
            "double_opt_in": settings.double_opt_in,
            "audiences": {a.role: (a.audience_id, a.tag) for a in settings.audiences},
        }


def test_the_page_is_in_the_hosts_layout_and_offers_connect(staff_client):
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Marigold Consignment" in page  # the shop's own base template
    assert "Not connected" in page and "Next step (1 of 4): Connect." in page
    for label in ("API key", "Consignor audience ID", "Customer audience ID", 'value="Connect"'):
        assert label in page


def test_good_key_connects_and_offers_the_audiences(app, staff_client, mailchimp_account, emulator):
    emulator.state.add_member(mailchimp_account.customers.id, "ann@mailbox.shop")
    response = connect(staff_client, mailchimp_account.api_key)
    assert response.status_code == 302
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Marigold Consignment" in page and "••••-us6" in page and "(connected since " in page
    assert "Next step (2 of 4): Choose audiences." in page
    assert (
        f'<option value="{mailchimp_account.customers.id}">Customers (1 members)</option>' in page
    )
    assert (
        f'<option value="{mailchimp_account.consignors.id}">Consignors (0 members)</option>' in page
    )
    assert "Connected to the Mailchimp account Marigold Consignment." in page
    saved = stored_settings(app)
    assert saved["connected"] and saved["account"] == "Marigold Consignment"
    assert mailchimp_account.api_key not in saved["ciphertext"]
    assert saved["audiences"] == {}  # nothing chosen yet: no role is synced


def test_malformed_key_is_a_form_error_before_any_request(app, staff_client, emulator):
    response = connect(staff_client, "0123456789abcdef-us6")
    assert response.status_code == 400
    assert any(
        "32 hexadecimal characters, a dash and the data center" in e
        for e in errors(response.get_data(as_text=True))
    )
    assert emulator.state.requests == []
    assert stored_settings(app) is None


def test_rejected_key_is_a_form_error_and_nothing_is_saved(app, staff_client, mailchimp_account):
    response = connect(staff_client, "f" * 32 + "-us6")
    assert response.status_code == 400
    assert errors(response.get_data(as_text=True)) == [
        "Mailchimp rejected this API key. Check that it was copied whole and has not been "
        "revoked (Mailchimp: Profile > Extras > API keys)."
    ]
    assert stored_settings(app) is None


def test_timeout_is_a_form_error_and_nothing_is_saved(
    app, staff_client, mailchimp_account, emulator
):
    app.config["MAILCHIMP_SYNC_TIMEOUT"] = 0.2
    emulator.faults.hang_seconds = 0.5
    emulator.faults.fail_next(1, "timeout")
    response = connect(staff_client, mailchimp_account.api_key)
    assert response.status_code == 400
    assert errors(response.get_data(as_text=True)) == [
        "Mailchimp did not answer within 0.2 seconds. Nothing was changed; try again in a moment."
    ]
    assert stored_settings(app) is None


def test_unreachable_mailchimp_is_a_form_error(app, staff_client, mailchimp_account, emulator):
    emulator.faults.fail_next(1, "drop")
    response = connect(staff_client, mailchimp_account.api_key)
    assert response.status_code == 400
    assert "could not be reached" in errors(response.get_data(as_text=True))[0]
    assert stored_settings(app) is None


def test_pasted_audience_ids_are_verified(app, staff_client, mailchimp_account):
    response = connect(staff_client, mailchimp_account.api_key, customer="zzzzzzzzzz")
    assert response.status_code == 400
    assert "no audience with the ID 'zzzzzzzzzz'" in errors(response.get_data(as_text=True))[0]
    assert stored_settings(app) is None  # not even the key: nothing saved on any failure

    response = connect(
        staff_client,
        mailchimp_account.api_key,
        consignor=mailchimp_account.consignors.id,
        customer=mailchimp_account.customers.id,
    )
    assert response.status_code == 302
    assert stored_settings(app)["audiences"] == {
        "consignor": (mailchimp_account.consignors.id, "Consignor"),
        "customer": (mailchimp_account.customers.id, "Customer"),
    }


def test_same_audience_for_both_roles_with_custom_tags(app, staff_client, mailchimp_account):
    connect(staff_client, mailchimp_account.api_key)
    shared = mailchimp_account.customers.id
    response = save_audiences(
        staff_client,
        role0_audience=shared,
        role1_audience=shared,
        role0_tag="Seller",
        role1_tag="Buyer",
        double_opt_in="y",
    )
    assert response.status_code == 302
    saved = stored_settings(app)
    assert saved["audiences"] == {"consignor": (shared, "Seller"), "customer": (shared, "Buyer")}
    assert saved["double_opt_in"] is True
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert page.count(f'<option selected value="{shared}">') == 2


def test_a_role_left_empty_is_not_synced(app, staff_client, mailchimp_account, runner):
    connect(staff_client, mailchimp_account.api_key)
    save_audiences(staff_client, role0_audience="", role1_audience=mailchimp_account.customers.id)
    assert stored_settings(app)["audiences"] == {
        "customer": (mailchimp_account.customers.id, "Customer")
    }
    assert (
        "consignor (Consignor): no audience chosen (not synced)"
        in runner.invoke(args=["mailchimp", "status"]).output
    )


def test_the_only_audience_is_preselected_for_both_roles(staff_client, emulator):
    account, (only,) = emulator.add_account_with_audiences("Solo Shop", "Everyone")
    connect(staff_client, account.api_key)
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert page.count(f'<option selected value="{only.id}">') == 2


def test_a_pasted_id_overrides_the_dropdown_and_is_verified(app, staff_client, mailchimp_account):
    connect(staff_client, mailchimp_account.api_key)
    response = save_audiences(staff_client, role1_audience="", role1_audience_id="abcdef1234")
    assert response.status_code == 400
    assert "no audience with the ID 'abcdef1234'" in errors(response.get_data(as_text=True))[0]
    assert stored_settings(app)["audiences"] == {}
    response = save_audiences(
        staff_client, role1_audience="", role1_audience_id=mailchimp_account.customers.id
    )
    assert response.status_code == 302
    assert stored_settings(app)["audiences"]["customer"][0] == mailchimp_account.customers.id


@pytest.mark.parametrize(
    "fields",
    [
        {"role1_audience": "not-an-audience"},
        {"role1_audience_id": "<script>"},
        {"role1_tag": ""},
        {"role1_tag": "x" * 101},
    ],
)
def test_bad_audience_input_is_a_form_error(app, staff_client, mailchimp_account, fields):
    connect(staff_client, mailchimp_account.api_key)
    response = save_audiences(staff_client, **fields)
    assert response.status_code == 400 and errors(response.get_data(as_text=True))
    assert stored_settings(app)["audiences"] == {}


def test_page_still_works_when_mailchimp_cannot_list_audiences(
    staff_client, mailchimp_account, emulator
):
    connect(staff_client, mailchimp_account.api_key)
    emulator.faults.fail_next(1, "503-bare")
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert (
        "Mailchimp could not list your audiences just now: Mailchimp answered with an error "
        "(HTTP 503)." in page
    )
    assert '<select id="role1_audience" name="role1_audience">' in page


def test_disconnect_asks_first_then_forgets_the_key_and_keeps_the_choices(
    app, staff_client, mailchimp_account
):
    connect(staff_client, mailchimp_account.api_key, customer=mailchimp_account.customers.id)
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert (
        'class="mailchimp-sync-danger" href="/preferences/integrations/mailchimp/disconnect"'
        in page
    )
    asked = staff_client.get(PAGE + "disconnect").get_data(as_text=True)
    for said in ("Members stay in Mailchimp", "Real-time updates stop.",
                 "Your audience choices are kept", 'class="mailchimp-sync-danger"'):  # fmt: skip
        assert said in asked
    token = csrf_token(asked)
    refused = staff_client.post(PAGE + "disconnect", data={"csrf_token": token})
    assert refused.status_code == 400
    assert "Tick the box to confirm" in refused.get_data(as_text=True)
    assert stored_settings(app)["connected"] is True  # nothing happened without the tick
    response = staff_client.post(PAGE + "disconnect", data={"csrf_token": token, "confirm": "y"})
    assert response.status_code == 302
    saved = stored_settings(app)
    assert saved["connected"] is False and saved["ciphertext"] is None
    customers = mailchimp_account.customers
    assert saved["audiences"] == {"customer": (customers.id, "Customer")}  # kept
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert "Not connected" in page and "members stay in Mailchimp" in page
    assert f"Customers → {customers.name} (kept for reconnecting" in page
    assert ">All runs</a>" in page  # history stays reachable
    # The same account again: the choices come back as they were.
    assert connect(staff_client, mailchimp_account.api_key).status_code == 302
    assert stored_settings(app)["audiences"] == {"customer": (customers.id, "Customer")}


def test_connecting_another_account_clears_the_choices(
    app, staff_client, mailchimp_account, emulator
):
    connect(staff_client, mailchimp_account.api_key, customer=mailchimp_account.customers.id)
    token = csrf_token(staff_client.get(PAGE + "disconnect").get_data(as_text=True))
    staff_client.post(PAGE + "disconnect", data={"csrf_token": token, "confirm": "y"})
    other, _audiences = emulator.add_account_with_audiences("Other Shop", "Everyone")
    assert connect(staff_client, other.api_key).status_code == 302
    saved = stored_settings(app)
    assert saved["account"] == "Other Shop" and saved["audiences"] == {}


@pytest.mark.parametrize("action", ["connect", "disconnect", "audiences"])
def test_a_post_without_csrf_token_changes_nothing(app, staff_client, mailchimp_account, action):
    connect(staff_client, mailchimp_account.api_key, customer=mailchimp_account.customers.id)
    before = stored_settings(app)
    data = {
        "api_key": mailchimp_account.api_key,
        "role0_audience": mailchimp_account.consignors.id,
        "role0_tag": "X",
        "role1_tag": "Y",
    }
    response = staff_client.post(PAGE + action, data=data)
    assert response.status_code == 400
    assert stored_settings(app) == before


def test_the_key_never_appears_in_pages_or_logs(
    app, staff_client, mailchimp_account, emulator, caplog
):
    caplog.set_level(logging.DEBUG)
    secret = mailchimp_account.api_key.split("-")[0]
    bodies = [
        connect(staff_client, "f" * 32 + "-us6").get_data(as_text=True),
        connect(staff_client, mailchimp_account.api_key).get_data(as_text=True),
        staff_client.get(PAGE).get_data(as_text=True),
        save_audiences(staff_client, role1_audience=mailchimp_account.customers.id).get_data(
            as_text=True
        ),
        staff_client.get(PAGE).get_data(as_text=True),
    ]
    emulator.faults.fail_next(1, "500")
    bodies.append(staff_client.get(PAGE).get_data(as_text=True))
    assert all(secret not in body for body in bodies)
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert 'name="api_key"' not in bodies[2]  # a connected page has no key field at all


# -- authorization --------------------------------------------------------------------


def host_without_authorization(tmp_path, emulator, check=None) -> Flask:
    app, db, mailchimp = make_host(tmp_path, "bare_host")
    if check is not None:
        mailchimp.authorize(check)
    app.config["MAILCHIMP_SYNC_API_URL"] = emulator.api_url
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
    return app


def test_pages_are_closed_without_an_authorization_hook(tmp_path, emulator):
    client = host_without_authorization(tmp_path, emulator).test_client()
    response = client.get(PAGE)
    assert response.status_code == 403
    assert "@mailchimp.authorize" in response.get_data(as_text=True)
    assert client.post(PAGE + "connect", data={"api_key": "x"}).status_code == 403


def test_a_hook_that_says_no_gives_403(tmp_path, emulator):
    client = host_without_authorization(tmp_path, emulator, check=lambda: False).test_client()
    assert client.get(PAGE).status_code == 403


def test_logged_out_staff_are_sent_to_the_hosts_login(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_bare_host_gets_the_plugins_own_layout(tmp_path, emulator):
    client = host_without_authorization(tmp_path, emulator, check=lambda: True).test_client()
    page = client.get(PAGE).get_data(as_text=True)
    assert page.startswith("<!doctype html>") and 'id="mailchimp-sync-title">Mailchimp</h1>' in page


# -- the same checks at the HTTP level, with `responses` ------------------------------

KEY = "0123456789abcdef0123456789abcdef-us6"
ROOT = "https://us6.api.mailchimp.com/3.0/"


@pytest.fixture
def real_mailchimp_url(app):
    app.config["MAILCHIMP_SYNC_API_URL"] = None


@responses.activate
def test_good_key_with_responses(app, real_mailchimp_url, staff_client):
    responses.get(ROOT + "ping", json={"health_status": "Everything's Chimpy!"})
    responses.get(
        ROOT, json={"account_id": "8d3a3db4d97663a9074efcc16", "account_name": "Freddie's Jokes"}
    )
    responses.get(
        ROOT + "lists",
        json={
            "lists": [{"id": "a1b2c3d4e5", "name": "Jokes", "stats": {"member_count": 7}}],
            "total_items": 1,
        },
    )
    assert connect(staff_client, KEY).status_code == 302
    assert stored_settings(app)["account"] == "Freddie's Jokes"
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert '<option selected value="a1b2c3d4e5">Jokes (7 members)</option>' in page
    assert [c.request.url.split("?")[0] for c in responses.calls[:2]] == [ROOT + "ping", ROOT]


@responses.activate
def test_malformed_key_with_responses_makes_no_request(app, real_mailchimp_url, staff_client):
    assert connect(staff_client, "nope").status_code == 400
    assert len(responses.calls) == 0


@responses.activate
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            {
                "status": 401,
                "json": {
                    "title": "API Key Invalid",
                    "status": 401,
                    "detail": "Your API key may be invalid.",
                },
            },
            "rejected this API key",
        ),
        ({"body": requests.exceptions.ConnectTimeout()}, "did not answer within"),
        ({"body": requests.exceptions.ConnectionError()}, "could not be reached"),
        ({"status": 503, "body": ""}, "HTTP 503"),
    ],
)
def test_failures_with_responses(app, real_mailchimp_url, staff_client, reply, message):
    responses.get(ROOT + "ping", **reply)
    response = connect(staff_client, KEY)
    assert response.status_code == 400 and message in errors(response.get_data(as_text=True))[0]
    assert stored_settings(app) is None


@responses.activate
def test_unknown_audience_with_responses(app, real_mailchimp_url, staff_client):
    responses.get(ROOT + "ping", json={"health_status": "Everything's Chimpy!"})
    responses.get(ROOT, json={"account_id": "x", "account_name": "Shop"})
    responses.get(
        ROOT + "lists/zzzzzzzzzz",
        status=404,
        json={
            "title": "Resource Not Found",
            "status": 404,
            "detail": "The requested resource could not be found.",
        },
    )
    response = connect(staff_client, KEY, consignor="zzzzzzzzzz")
    assert "no audience with the ID" in errors(response.get_data(as_text=True))[0]
    assert stored_settings(app) is None


def test_a_refused_audience_form_asks_mailchimp_for_the_list_once(
    staff_client, mailchimp_account, emulator
):
    connect(staff_client, mailchimp_account.api_key)
    token = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    before = len(emulator.state.requests)
    response = staff_client.post(PAGE + "audiences", data={"csrf_token": token, "role0_tag": ""})
    assert response.status_code == 400
    listed = [r for r in emulator.state.requests[before:] if r["path"] == "/lists"]
    assert len(listed) == 1
