from __future__ import annotations

import json

import pytest
import requests
import responses

from flask_mailchimp_sync import InvalidApiKeyError, MailchimpApiError
from flask_mailchimp_sync.client import USER_AGENT, api_base_url, build_client

KEY = "0123456789abcdef0123456789abcdef-us6"


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, "https://us6.api.mailchimp.com/3.0/"),
        ("http://127.0.0.1:8080/3.0/", "http://127.0.0.1:8080/3.0/"),
        ("http://127.0.0.1:8080/3.0", "http://127.0.0.1:8080/3.0/"),
    ],
)
def test_base_url_follows_the_key_or_the_config(configured, expected):
    assert api_base_url(KEY, {"MAILCHIMP_SYNC_API_URL": configured}) == expected


@responses.activate
def test_client_calls_the_data_center_with_a_timeout_and_our_user_agent():
    responses.get(
        "https://us6.api.mailchimp.com/3.0/ping", json={"health_status": "Everything's Chimpy!"}
    )
    client = build_client(KEY, {"MAILCHIMP_SYNC_TIMEOUT": 7})
    assert client.ping.get() == {"health_status": "Everything's Chimpy!"}
    assert client.timeout == 7.0
    sent = responses.calls[0].request
    assert sent.headers["User-Agent"] == USER_AGENT
    assert sent.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_a_malformed_key_never_leaves_the_process():
    with pytest.raises(InvalidApiKeyError):
        build_client("not-a-key-us6", {})
    assert len(responses.calls) == 0


def test_client_reaches_the_emulator_through_the_api_url(emulator, mailchimp_account):
    client = build_client(mailchimp_account.api_key, {"MAILCHIMP_SYNC_API_URL": emulator.api_url})
    assert client.ping.get()["health_status"] == "Everything's Chimpy!"
    assert client.root.get()["account_name"] == "Marigold Consignment"
    assert emulator.state.requests[-1]["user_agent"] == USER_AGENT


def test_every_call_has_a_timeout(emulator, mailchimp_account):
    emulator.faults.hang_seconds = 1.0
    emulator.faults.fail_next(1, "timeout")
    client = build_client(
        mailchimp_account.api_key,
        {"MAILCHIMP_SYNC_API_URL": emulator.api_url, "MAILCHIMP_SYNC_TIMEOUT": 0.2},
    )
    with pytest.raises(requests.exceptions.Timeout):
        client.ping.get()


@responses.activate
def test_merge_fields_are_read_and_created_with_their_type():
    from flask_mailchimp_sync.client import MailchimpApi

    url = "https://us6.api.mailchimp.com/3.0/lists/a1b2c3d4e5/merge-fields"
    responses.get(
        url, json={"merge_fields": [{"tag": "CREDIT", "name": "Credit", "type": "number"}]}
    )
    responses.post(
        url, json={"merge_id": 5, "tag": "LASTPAID", "name": "Last payout", "type": "date"}
    )
    api = MailchimpApi(KEY, {"MAILCHIMP_SYNC_MAX_RETRIES": 0})
    assert api.merge_fields("a1b2c3d4e5") == [{"tag": "CREDIT", "name": "Credit", "type": "number"}]
    assert "merge_fields.type" in responses.calls[0].request.url
    body = {"tag": "LASTPAID", "name": "Last payout", "type": "date", "required": False}
    assert api.add_merge_field("a1b2c3d4e5", body)["type"] == "date"
    assert json.loads(responses.calls[1].request.body) == body


@responses.activate
def test_a_refused_merge_field_is_named_in_mailchimps_words():
    from flask_mailchimp_sync.client import MailchimpApi

    responses.put(
        "https://us6.api.mailchimp.com/3.0/lists/a1b2c3d4e5/members/" + "0" * 32,
        status=400,
        json={
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": "Invalid Resource",
            "status": 400,
            "detail": "Your merge fields were invalid.",
            "instance": "",
            "errors": [{"field": "CREDIT", "message": "Please enter a number"}],
        },
    )
    api = MailchimpApi(KEY, {"MAILCHIMP_SYNC_MAX_RETRIES": 0})
    with pytest.raises(MailchimpApiError) as refused:
        api.upsert_member(
            "a1b2c3d4e5", "0" * 32, {"email_address": "a@b.shop", "status_if_new": "subscribed"}
        )
    assert refused.value.detail == "Your merge fields were invalid. CREDIT: Please enter a number"
    assert str(refused.value) == (
        "Mailchimp refused the request: Your merge fields were invalid. "
        "CREDIT: Please enter a number"
    )
