"""MAILCHIMP_SYNC_PUBLIC_URL is checked at init_app, as mailchimp3 will check the webhook's
URL; a registration that fails anyway is a message on the page, never a 500."""

from __future__ import annotations

import pytest

from flask_mailchimp_sync import ConfigurationError

from .helpers import PAGE, csrf_token, make_host


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("https://Shop.Example.com", "lowercase (shop.example.com)"),
        ("https://shop.example.com.", "trailing dot (shop.example.com)"),
        ("https://xn--bcher-kva.example", "punycode"),
        ("https://shop.xn--p1ai", "punycode"),
        ("http://localhost:5000", "never localhost"),
        ("https://192.168.1.20", "private network"),
        ("https://shop", "top-level domain"),
        ("shop.example.com", "https://"),
        ("https://shop.example.com/?ref=mc", "no query"),
    ],
)
def test_a_public_url_mailchimp3_would_refuse_is_a_configuration_error(tmp_path, url, hint):
    app, _db, mailchimp = make_host(tmp_path)
    app.config["MAILCHIMP_SYNC_PUBLIC_URL"] = url
    with pytest.raises(ConfigurationError, match="MAILCHIMP_SYNC_PUBLIC_URL") as refused:
        mailchimp.init_app(app)
    assert hint in str(refused.value) and "leave it unset" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["https://shop.example.com", "https://shop.example.com/", "https://shop.example.com:8443/app"],
)
def test_a_good_public_url_is_accepted(tmp_path, url):
    app, _db, mailchimp = make_host(tmp_path)
    app.config["MAILCHIMP_SYNC_PUBLIC_URL"] = url
    mailchimp.init_app(app)


def test_a_url_changed_after_init_app_is_a_page_message_not_a_500(
    app, staff_client, mailchimp_account
):
    app.config["MAILCHIMP_SYNC_PUBLIC_URL"] = "https://Shop.Example.com"
    token = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    response = staff_client.post(
        PAGE + "connect",
        data={"csrf_token": token, "api_key": mailchimp_account.api_key,
              "role1_audience_id": mailchimp_account.customers.id},
        follow_redirects=True,
    )  # fmt: skip
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Connected to the Mailchimp account" in page
    assert "The webhook could not be registered" in page and "lowercase" in page
