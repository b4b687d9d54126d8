"""What staff see: the first-run path, plain words, Disconnect, the customer's status.

Each test names the point of the staff-page review it holds fixed (see the README's
'The staff pages').
"""

from __future__ import annotations

import html
import os
import re
import stat
import time
from types import SimpleNamespace

import pytest

from example_app import instance_secret_key
from example_app.auth import safe_next
from flask_mailchimp_sync import words
from flask_mailchimp_sync.engine.runner import SyncRunner
from flask_mailchimp_sync.jobs import start_sync
from flask_mailchimp_sync.testing import stop_jobs, wait_for_jobs

from .helpers import PAGE, add_consignor, add_customer, connect_shop, csrf_token, sync, text


def post(client, action, **data):
    token = csrf_token(client.get(PAGE + ("disconnect" if action == "disconnect" else "")).text)
    return client.post(PAGE + action, data={"csrf_token": token, **data})


def settings_form(audience, **extra):
    return {"role0_audience": audience, "role1_audience": audience, "role0_tag": "Consignor",
            "role1_tag": "Customer", "realtime": "y", **extra}  # fmt: skip


# -- 1. the first-run path --------------------------------------------------------------


def test_each_stage_of_the_first_run_says_the_next_step(
    app, staff_client, mailchimp_account, emulator
):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    page = text(staff_client.get(PAGE).text)
    assert "Next step (1 of 4): Connect." in page
    assert "Real-time updates start after the first Sync." in page
    assert post(staff_client, "connect", api_key=mailchimp_account.api_key).status_code == 302
    assert "Next step (2 of 4): Choose audiences." in text(staff_client.get(PAGE).text)
    assert post(staff_client, "audiences", **settings_form(audience)).status_code == 302
    page = text(staff_client.get(PAGE).text)
    assert "Settings saved. Nothing was sent yet. Next: Preview, then Sync." in page
    assert "Next step (3 of 4): Preview." in page
    assert emulator.state.members(audience) == {}  # saving sent nobody
    assert post(staff_client, "sync", preview="Preview").status_code == 302
    wait_for_jobs(app)
    page = text(staff_client.get(PAGE).text)
    assert "Next step (4 of 4): First Sync." in page and "Real-time updates start after" in page
    assert emulator.state.members(audience) == {}  # the preview sent nobody either
    assert post(staff_client, "sync", sync="Sync").status_code == 302
    wait_for_jobs(app)
    page = text(staff_client.get(PAGE).text)
    assert "All set. Changes reach Mailchimp by themselves as they happen." in page
    assert "Real-time updates On: each change is sent as it happens" in page
    assert "Next step" not in page
    assert emulator.state.member(audience, "ben@mailbox.shop").status == "subscribed"


# -- 4. the dashboard; 14. the login's redirect and the secret key ----------------------


def test_the_dashboard_counts_items(staff_client):
    page = staff_client.get("/").text
    assert "built-in method" not in page
    assert re.search(r"\d+ consignors, \d+ customers, \d+ items on consignment\.", page)


@pytest.mark.parametrize(
    "target",
    ["/%09/evil.example/path", "/%0a/evil.example", "/%0d%0a/evil.example", "/%5Cevil.example",
     "//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"],
)  # fmt: skip
def test_login_never_redirects_off_site(staff_client, target):
    other = staff_client.application.test_client()
    token = csrf_token(other.get("/login").text)
    response = other.post(
        f"/login?next={target}",
        data={"email": "tester@marigold.shop", "password": "pw", "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_login_goes_back_to_a_page_of_the_shop(staff_client):
    other = staff_client.application.test_client()
    token = csrf_token(other.get("/login").text)
    response = other.post(
        "/login?next=/customers%3Fq%3Dann",
        data={"email": "tester@marigold.shop", "password": "pw", "csrf_token": token},
    )
    assert response.headers["Location"] == "/customers?q=ann"
    assert (
        safe_next("/preferences/integrations/mailchimp/") == "/preferences/integrations/mailchimp/"
    )


def test_each_instance_makes_its_own_secret_key(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    key = instance_secret_key(str(first))
    assert len(key) == 64 and key == instance_secret_key(str(first))  # kept
    assert instance_secret_key(str(second)) != key  # not shared between instances
    assert stat.S_IMODE(os.stat(first / "secret_key").st_mode) == 0o600
    monkeypatch.delenv("SHOP_SECRET_KEY", raising=False)
    from example_app import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert app.config["SECRET_KEY"] == instance_secret_key(app.instance_path)
    assert "change-me" not in app.config["SECRET_KEY"]


# -- 5. Disconnect ------------------------------------------------------------------------


def test_while_disconnected_no_customer_page_says_subscribed(app, staff_client, mailchimp_account):
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
        ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop").id
        sync()
    assert ">Subscribed<" in staff_client.get(f"/customers/{ben}").text
    assert post(staff_client, "disconnect", confirm="y").status_code == 302
    page = staff_client.get(f"/customers/{ben}").text
    assert "Subscribed" not in page
    assert "Not connected: the shop&#39;s Mailchimp account is disconnected" in page


def test_the_webhook_secret_changes_on_disconnect_and_on_reconnect(
    app, client, staff_client, mailchimp_account, hooked
):
    from example_app import mailchimp

    _audience, old_url = hooked
    assert client.get(old_url).status_code == 200
    assert post(staff_client, "disconnect", confirm="y").status_code == 302
    with app.app_context():
        assert mailchimp.settings_store().get().webhook_secret is None
    assert client.get(old_url).status_code == 404
    assert post(staff_client, "connect", api_key=mailchimp_account.api_key).status_code == 302
    with app.app_context():
        secret = mailchimp.settings_store().get().webhook_secret
    assert secret and secret not in old_url
    assert client.get(old_url).status_code == 404


# -- 6, 7. progress in words; a failed run ------------------------------------------------


def record_run(app, **fields):
    from example_app import mailchimp

    with app.app_context():
        run = mailchimp.models.SyncRun(**fields)
        mailchimp.db.session.add(run)
        mailchimp.db.session.commit()
        return run.id


def test_a_run_reading_mailchimp_names_the_audience_and_counts(
    app, staff_client, mailchimp_account
):
    audience = mailchimp_account.customers.id
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": audience})
    run = record_run(app, state="running", phase=f"reading {audience} 12000", audiences=audience)
    page = staff_client.get(f"{PAGE}runs/{run}").text
    assert "In progress" in page and audience not in text(page).split("All runs")[1]
    assert "Reading members from Mailchimp (customer): 12,000 read so far" in page
    assert '<progress id="mailchimp-sync-bar" max="100">' in page  # moving, no number yet
    assert '<label for="mailchimp-sync-bar">Progress</label>' in page
    assert 'aria-live="polite"' in page
    summary = staff_client.get(f"{PAGE}runs/{run}.json").json
    assert summary["percent"] is None and summary["state_text"] == "In progress"


def test_a_retry_is_shown_while_it_waits(app, staff_client, mailchimp_account, monkeypatch):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    now = float(int(time.time()))
    # The page's clock stands still: on a loaded machine the page could come seconds
    # after the mark, and say "2 s" or nothing at all.
    monkeypatch.setattr(words, "time", SimpleNamespace(time=lambda: now))
    run = record_run(
        app, state="running", phase=f"sending|retry {now + 4:.0f}", total=10, processed=5
    )
    summary = staff_client.get(f"{PAGE}runs/{run}.json").json
    assert summary["retry_text"] == "Mailchimp is busy, retrying in 4 s"
    assert summary["phase_text"] == "Sending changes to Mailchimp" and summary["percent"] == 50
    assert "Mailchimp is busy, retrying in" in staff_client.get(f"{PAGE}runs/{run}").text


def test_a_sync_records_its_retries_and_reading_progress(app, emulator, mailchimp_account):
    from example_app import mailchimp

    audience = mailchimp_account.customers.id
    app.config["MAILCHIMP_SYNC_RETRY_BACKOFF"] = 0.01
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience})
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        emulator.state.add_member(audience, "walk.by@inkwell.org")
        emulator.faults.fail_next(1, "429")
        phases: list[str] = []
        run = start_sync(mailchimp, enqueue=False, trigger="test")
        run = SyncRunner(mailchimp, run.id).execute(lambda r: phases.append(r.phase or ""))
        assert run.state == "done"
    assert any(words.RETRY_MARK in phase for phase in phases)
    assert f"reading {audience} 1" in phases  # one member read


def test_a_failed_run_looks_like_an_error_and_says_what_to_do(app, staff_client, mailchimp_account):
    audience = mailchimp_account.customers.id
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": audience})
    run = record_run(
        app, state="failed", phase=f"reading {audience}", audiences=audience,
        error="Mailchimp could not be reached (a network error).",
    )  # fmt: skip
    page = staff_client.get(f"{PAGE}runs/{run}").text
    assert '<div class="mailchimp-sync-failed" role="alert">' in page
    assert "This sync failed." in page and "What to do next" in page
    assert "Reading members" not in page  # no phase once it ended
    assert 'class="state-failed">Failed<' in page
    listed = staff_client.get(PAGE).text
    assert 'class="state-failed">Failed</td>' in listed


# -- 8. one form, one Save ---------------------------------------------------------------


def test_one_settings_form_saves_everything_at_once(app, staff_client, mailchimp_account):
    audience = mailchimp_account.customers.id
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": audience}, realtime=True)
    page = staff_client.get(PAGE).text
    assert page.count('type="submit" value="Save') == 1
    form = page.split('action="/preferences/integrations/mailchimp/audiences"')[1]
    assert 'id="realtime"' in form.split("</form>")[0]  # real time is in the one form
    data = settings_form(audience, double_opt_in="y")
    del data["realtime"]  # unticked
    assert post(staff_client, "audiences", **data).status_code == 302
    from example_app import mailchimp

    with app.app_context():
        settings = mailchimp.settings_store().get()
        assert settings.realtime is False and settings.double_opt_in is True
    assert "Off: changes wait for the next Sync" in text(staff_client.get(PAGE).text)


# -- 9. the customer's page right after a change -----------------------------------------


def test_the_customer_page_shows_a_change_on_its_way(app, staff_client, mailchimp_account):
    with app.app_context():
        from example_app.models import db

        connect_shop(
            mailchimp_account.api_key, {"customer": mailchimp_account.customers.id}, realtime=True
        )
        ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop").id
        sync()
    stop_jobs(app)  # the delivery has not landed yet
    token = csrf_token(staff_client.get(f"/customers/{ben}").text)
    response = staff_client.post(f"/customers/{ben}", data={"csrf_token": token})
    assert response.status_code == 302
    page = staff_client.get(f"/customers/{ben}").text
    assert "Marketing preference saved." in page
    assert ">Archiving in Mailchimp…<" in page and ">Subscribed<" not in page


def test_the_customer_page_says_a_change_waits_for_sync(app, staff_client, mailchimp_account):
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
        ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop").id
        sync()
    token = csrf_token(staff_client.get(f"/customers/{ben}").text)
    staff_client.post(f"/customers/{ben}", data={"csrf_token": token})
    page = html.unescape(staff_client.get(f"/customers/{ben}").text)
    assert "Subscribed (a change waits for the next Sync, as real-time updates are off)" in page


# -- 10. words staff follow ---------------------------------------------------------------


def test_developer_details_are_in_a_collapsed_box(app, staff_client, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    page = staff_client.get(PAGE).text
    before, rest = page.split('<details class="mailchimp-sync-developer">')
    inside, after = rest.split("</details>")
    for developer_word in ("MAILCHIMP_SYNC_PUBLIC_URL", "Data center", "••••-us6"):
        assert developer_word in inside and developer_word not in before + after
    assert "For your developer" in inside
    assert "being retried" not in page and "failing repeatedly" not in page


def test_mailchimps_words_say_whose_support_with_one_full_stop():
    assert (
        words.mailchimp_text("x@y.com is in a compliance state. Please contact Support..")
        == "x@y.com is in a compliance state. Please contact Mailchimp Support."
    )


def test_report_names_contacts_and_links_to_their_pages(app, staff_client, mailchimp_account):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience, "consignor": audience})
        ann = add_customer(db, "Ann", "Abbott", "not-an-email").id
        add_consignor(db, "Carl Chen", "carl@")
        run = sync().id
    page = staff_client.get(f"{PAGE}runs/{run}").text
    assert f'<a href="/customers/{ann}">Ann Abbott</a>' in page
    assert '<td data-label="Contact">Carl Chen</td>' in page  # no page of its own: no link
    assert "consignor:consignors" not in page and "customer:customers" not in page


# -- 11. the API key after a form error ---------------------------------------------------


def test_the_key_is_kept_encrypted_after_an_audience_error(app, staff_client, mailchimp_account):
    secret = mailchimp_account.api_key.split("-")[0]
    response = post(
        staff_client, "connect", api_key=mailchimp_account.api_key, role1_audience_id="zzzzzzzzzz"
    )
    assert response.status_code == 400
    page = response.text
    assert "no audience with the ID" in page
    assert "Mailchimp accepted the key you entered" in page
    assert secret not in page
    cookie = staff_client.get_cookie("session")
    assert secret not in str(app.session_interface.get_signing_serializer(app).loads(cookie.value))
    # The key box left empty: the kept key is used.
    response = post(
        staff_client, "connect", api_key="", role1_audience_id=mailchimp_account.customers.id
    )
    assert response.status_code == 302
    page = staff_client.get(PAGE).text
    assert "Marigold Consignment (connected" in text(page) and secret not in page


def test_a_rejected_key_is_not_kept(staff_client, mailchimp_account):
    response = post(staff_client, "connect", api_key="f" * 32 + "-us6")
    assert response.status_code == 400 and "Mailchimp accepted the key" not in response.text
    response = post(staff_client, "connect", api_key="")
    assert response.status_code == 400 and "This field is required." in response.text


# -- 12. accessibility the server renders -------------------------------------------------


def test_errors_and_hints_are_tied_to_their_fields(app, staff_client, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    response = post(staff_client, "audiences", **settings_form("", role1_tag=""))
    assert response.status_code == 400
    tag = re.search(r"<input[^>]*id=\"role1_tag\"[^>]*>", response.text).group(0)
    assert 'aria-invalid="true"' in tag
    assert 'aria-describedby="role1_tag-hint role1_tag-errors"' in tag
    assert 'id="role1_tag-errors"' in response.text and 'id="role1_tag-hint"' in response.text
    untouched = re.search(r"<input[^>]*id=\"role0_tag\"[^>]*>", response.text).group(0)
    assert "aria-invalid" not in untouched


# -- 13. a sync already running -----------------------------------------------------------


def test_a_second_sync_warns_and_leads_to_the_running_one(app, staff_client, mailchimp_account):
    audience = mailchimp_account.customers.id
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": audience})
    # Queued (a running run holds its audience's lock, or it counts as abandoned).
    running = record_run(app, state="queued", audiences=audience)
    response = post(staff_client, "sync", sync="Sync")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"{PAGE}runs/{running}")
    page = staff_client.get(response.headers["Location"]).text
    assert '<p class="flash flash-warning" role="status">A sync of this audience is already' in page
    assert "Here is its progress." in page and "shows its progress below" not in page
