"""Jobs: the Sync button queues and returns; in-process by default, RQ on a real Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import (
    NOTES,
    add_customer,
    add_opted_in_customers,
    connect_shop,
    csrf_token,
    free_port,
    hold_requests_at,
    items,
    subprocess_env,
    wait_until_quiet,
)

PAGE = "/preferences/integrations/mailchimp/"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shop(app, mailchimp_account):
    """Connected, one shared audience, three customers (one with a bad address)."""
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"consignor": audience, "customer": audience})
        add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
        add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop")
        add_customer(db, "Typo", "Mail", "anna@")
    return audience


def press(client, button="sync"):
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    return client.post(PAGE + "sync", data={"csrf_token": token, button: button.title()})


def test_sync_button_returns_before_mailchimp_answers(app, staff_client, emulator, shop):
    emulator.faults.latency = 0.5
    response = press(staff_client)
    assert response.status_code == 302 and "/runs/" in response.headers["Location"]
    progress = staff_client.get(response.headers["Location"] + ".json").get_json()
    assert progress["state"] in ("queued", "running") and (progress["percent"] or 0) < 100
    wait_for_jobs(app)
    progress = staff_client.get(response.headers["Location"] + ".json").get_json()
    assert progress["state"] == "done" and progress["percent"] == 100
    assert progress["counts"]["added"] == 2 and progress["counts"]["skipped"] == 1
    assert set(emulator.state.members(shop)) == {"ben@mailbox.shop", "cleo@mailbox.shop"}


def test_run_page_lists_the_skipped_contact_and_the_history(app, staff_client, shop):
    location = press(staff_client).headers["Location"]
    wait_for_jobs(app)
    page = staff_client.get(location).get_data(as_text=True)
    assert "Sync #1" in page and "not a valid email address: &#39;anna@&#39;" in page
    assert 'data-count="added">2<' in page
    assert "#1" in staff_client.get(PAGE + "runs").get_data(as_text=True)
    assert ">#1</a>" in staff_client.get(PAGE).get_data(as_text=True)
    skipped_only = staff_client.get(location + "?outcome=blocked").get_data(as_text=True)
    assert "anna@" not in skipped_only


def test_preview_button_sends_nothing(app, staff_client, emulator, shop):
    location = press(staff_client, "preview").headers["Location"]
    wait_for_jobs(app)
    page = staff_client.get(location).get_data(as_text=True)
    assert "Nothing was sent to Mailchimp" in page and 'data-count="added">2<' in page
    assert emulator.state.write_requests() == []


def test_a_second_click_while_a_sync_runs_says_so(app, staff_client, emulator, shop):
    emulator.faults.latency = 0.3
    first = press(staff_client).headers["Location"]
    second = press(staff_client)
    assert second.headers["Location"] == first  # to the running sync's progress
    page = staff_client.get(first).get_data(as_text=True)
    assert 'flash-warning" role="status">A sync of this audience is already' in page
    wait_for_jobs(app)


def test_unknown_run_is_404(staff_client):
    assert staff_client.get(PAGE + "runs/999").status_code == 404
    assert staff_client.get(PAGE + "runs/999.json").status_code == 404


def test_sync_without_csrf_token_queues_nothing(app, staff_client, shop):
    assert staff_client.post(PAGE + "sync", data={"sync": "Sync"}).status_code == 400
    with app.app_context():
        from example_app import mailchimp

        assert mailchimp.db.session.query(mailchimp.models.SyncRun).count() == 0


def test_cli_sync_shows_progress_and_counts(runner, app, emulator, shop):
    result = runner.invoke(args=["mailchimp", "sync"])
    assert result.exit_code == 0, result.output
    assert (
        "Run #1 done: 2 added, 0 updated, 0 archived, 0 unchanged, 0 not opted in, 0 blocked, "
        "1 skipped, 0 failed." in result.output
    )
    preview = runner.invoke(args=["mailchimp", "sync", "--dry-run"])
    assert "(preview: nothing was sent)" in preview.output
    assert runner.invoke(args=["mailchimp", "sync", "--role", "vendor"]).exit_code != 0


def test_cli_sync_fails_with_a_reason_when_not_connected(runner):
    result = runner.invoke(args=["mailchimp", "sync"])
    assert result.exit_code != 0 and "Connect a Mailchimp account first." in result.output


def test_worker_command_needs_redis(runner):
    result = runner.invoke(args=["mailchimp", "worker", "--burst"])
    assert result.exit_code != 0 and "No Redis is configured" in result.output


def test_redis_down_at_click_is_a_message_not_a_500(app, staff_client, shop):
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    response = press(staff_client)
    assert response.status_code == 302
    assert "Redis is unreachable" in staff_client.get(PAGE).get_data(as_text=True)


def test_rq_queue_with_a_real_worker(app, staff_client, emulator, shop, redis_server, monkeypatch):
    if redis_server is None:
        return _rq_with_fakeredis(app, staff_client, emulator, shop, monkeypatch)
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = redis_server
    location = press(staff_client).headers["Location"]
    assert staff_client.get(location + ".json").get_json()["state"] == "queued"
    worker = subprocess.run(
        [sys.executable, "-m", "flask", "mailchimp", "worker", "--burst"],
        env=subprocess_env(app, emulator, FLASK_MAILCHIMP_SYNC_REDIS_URL=redis_server),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert staff_client.get(location + ".json").get_json()["state"] == "done"
    assert set(emulator.state.members(shop)) == {"ben@mailbox.shop", "cleo@mailbox.shop"}


def _rq_with_fakeredis(app, staff_client, emulator, shop, monkeypatch):
    fakeredis = pytest.importorskip("fakeredis")
    import redis
    from rq import Queue, SimpleWorker

    server = fakeredis.FakeRedis()
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: server))
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = "redis://fake"
    location = press(staff_client).headers["Location"]
    with app.app_context():
        queue = Queue(app.config["MAILCHIMP_SYNC_QUEUE"], connection=server)
        SimpleWorker([queue], connection=server).work(burst=True)
    assert staff_client.get(location + ".json").get_json()["state"] == "done"
    assert set(emulator.state.members(shop)) == {"ben@mailbox.shop", "cleo@mailbox.shop"}


def test_a_sync_killed_midway_is_finished_by_the_next_run(app, emulator, mailchimp_account):
    """SIGKILL the syncing process mid-run; the next run completes with no duplicates."""
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience})
        add_opted_in_customers(db, 3000)
    reached, release = hold_requests_at(emulator, audience, 1000)  # then the kill
    emulator.faults.latency = 0.3
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "mailchimp", "sync"],
        env=subprocess_env(app, emulator, FLASK_MAILCHIMP_SYNC_LOCK_TIMEOUT="1"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reached.wait(timeout=60)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    release()
    assert reached.is_set(), "the run never reached 1,000 members"
    emulator.faults.latency = 0
    # the dead run's lock expires, and requests it had in flight land (they count below)
    wait_until_quiet(emulator, mailchimp_account.api_key, at_least=1.2)
    partial = len(emulator.state.members(audience))
    assert 0 < partial < 3000

    with app.app_context():
        from example_app import mailchimp

        from .helpers import sync

        run = sync()
        assert run.state == "done", run.error
        # members Mailchimp got but the killed run never recorded are updated, not added twice
        assert run.added == 3000 - partial
        assert run.added + run.updated + run.unchanged == 3000
        killed = mailchimp.db.session.get(mailchimp.models.SyncRun, 1)
        assert killed.state == "failed" and "stopped without finishing" in killed.error
        assert items(run) == {}
    held = emulator.state.members(audience)
    assert len(held) == 3000 and all(m.status == "subscribed" for m in held.values())
    assert (
        sum(
            len(r["body"]["members"])
            for r in emulator.state.write_requests()
            if r["path"] == f"/lists/{audience}"
        )
        >= 3000
    )


def pytest_terminal_summary(terminalreporter):  # pragma: no cover - collected by conftest
    for note in NOTES:
        terminalreporter.write_line(note)
