"""Staff at work in a real browser: headless Chromium (Debian's) driven by Playwright.

Skipped, and said so, where /usr/bin/chromium or Playwright is missing; CI installs both.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (CI installs it)"
)


@pytest.fixture
def served(app):
    """The example shop on 127.0.0.1, seeded, with its staff login."""
    from example_app.seed import seed

    with app.app_context():
        seed(consignors=20, customers=30, both=5)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def test_staff_connect_sync_and_turn_a_customer_off(app, emulator, mailchimp_account, served, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(served + "/")
    page.fill("#email", "staff@marigold.shop")
    page.fill("#password", "consign-demo")
    page.click("text=Log in")
    page.click("text=Preferences › Integrations")
    page.click("a:text-is('Mailchimp')")

    page.fill("#api_key", "not-a-key")
    page.click("input[value=Connect]")
    assert "32 hexadecimal characters" in page.inner_text("[role=alert]")

    page.fill("#api_key", mailchimp_account.api_key)
    page.click("input[value=Connect]")
    page.wait_for_selector("text=Connected to the Mailchimp account Marigold Consignment")
    page.select_option("#role0_audience", label="Consignors (0 members)")
    page.select_option("#role1_audience", label="Customers (0 members)")
    page.click("input[value=Save]")
    page.wait_for_selector("text=Audiences saved.")  # after the redirect, not during it
    page.screenshot(path=str(ARTIFACTS / "mailchimp-page.png"), full_page=True)

    page.click("input[value=Sync]")
    page.wait_for_url("**/runs/*")  # queued, not refused
    page.wait_for_selector("#mailchimp-sync-run[data-state=done]", timeout=30_000)
    assert page.inner_text("[data-field=percent]") == "100"
    assert "not a valid email address" in page.content()
    page.screenshot(path=str(ARTIFACTS / "sync-run.png"), full_page=True)

    page.click("text=Customers")
    with app.app_context():
        from example_app.models import Customer, CustomerPreferences, db

        customer = (
            db.session.query(Customer).join(CustomerPreferences)
            .filter(CustomerPreferences.accepts_marketing.is_(True), Customer.email.like("%@%.%"))
            .first()
        )  # fmt: skip
        customer_id, email = customer.id, customer.email
    assert emulator.state.member(mailchimp_account.customers.id, email).status == "subscribed"
    page.goto(f"{served}/customers/{customer_id}")
    assert "Subscribed" in page.inner_text(".mailchimp-status")
    page.uncheck("#accepts_marketing")
    page.click("text=Save")
    page.wait_for_selector("text=Marketing preference saved.")
    deadline = time.time() + 15
    while emulator.state.member(mailchimp_account.customers.id, email).visible_status != "archived":
        assert time.time() < deadline, "the member was not archived"
        time.sleep(0.1)
    page.reload()
    assert "Archived in Mailchimp" in page.inner_text(".mailchimp-status")
