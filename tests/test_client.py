from __future__ import annotations

import pytest
import requests
import responses

from flask_mailchimp_sync import InvalidApiKeyError
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
