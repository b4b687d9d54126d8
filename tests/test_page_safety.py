"""The staff pages answer absurd ids and page numbers with 404, and refuse to be framed."""

from __future__ import annotations

import pytest

from .helpers import PAGE, connect_shop, sync

HUGE = "99999999999999999999"


@pytest.fixture
def one_run(app, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
        return sync().id


@pytest.mark.parametrize(
    "path",
    [f"runs/{HUGE}", f"runs/{HUGE}.json", "runs/2147483648", "runs/0", f"runs?page={HUGE}",
     "runs?page=-3", "runs?page=0", "runs?page=abc", f"runs/{{run}}?page={HUGE}",
     "runs/{run}?page=2"],
)  # fmt: skip
def test_out_of_range_ids_and_pages_are_404(staff_client, one_run, path):
    assert staff_client.get(PAGE + path.format(run=one_run)).status_code == 404


@pytest.mark.parametrize("path", ["runs", "runs?page=1", "runs/{run}", "runs/{run}.json"])
def test_ordinary_ids_and_pages_still_answer(staff_client, one_run, path):
    assert staff_client.get(PAGE + path.format(run=one_run)).status_code == 200


@pytest.mark.parametrize("path", ["", "runs", "runs/1"])
def test_staff_pages_refuse_to_be_framed_by_default(staff_client, path):
    response = staff_client.get(PAGE + path)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_refusals_are_not_framed_either(client):
    response = client.get(PAGE)  # not logged in: the host's login redirect
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("setting", "frame_options", "policy"),
    [
        ("'self'", "SAMEORIGIN", "frame-ancestors 'self'"),
        ("https://pos.example.com", None, "frame-ancestors https://pos.example.com"),
        (None, None, None),
    ],
)
def test_the_host_can_allow_framing(app, staff_client, setting, frame_options, policy):
    app.config["MAILCHIMP_SYNC_FRAME_ANCESTORS"] = setting
    response = staff_client.get(PAGE)
    assert response.headers.get("X-Frame-Options") == frame_options
    assert response.headers.get("Content-Security-Policy") == policy


def test_a_hosts_own_headers_win(app, client):
    @app.after_request
    def host_policy(response):
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    response = client.get(PAGE)
    assert response.headers["Content-Security-Policy"] == "default-src 'self'"
    assert response.headers["X-Frame-Options"] == "DENY"
