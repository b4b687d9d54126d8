"""Scale out, with a real redis-server and real ``flask mailchimp worker`` processes:
one connection budget per Mailchimp account across processes, and audiences synced
side by side (the same audience never twice at once)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from flask_mailchimp_sync import budget
from flask_mailchimp_sync.jobs import enqueue_run
from flask_mailchimp_sync.models import as_utc

from .helpers import (
    PAGE,
    RedisServer,
    add_consignor,
    add_opted_in_customers,
    connect_shop,
    csrf_token,
    subprocess_env,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    RedisServer.binary is None, reason="redis-server is not installed (CI installs it)"
)

# A worker holding three calls in flight when it is killed.
HOLDER = """
import sys, threading
from flask_mailchimp_sync import budget
config = {"MAILCHIMP_SYNC_REDIS_URL": sys.argv[1], "MAILCHIMP_SYNC_MAX_CONNECTIONS": 3,
          "MAILCHIMP_SYNC_CONNECTION_LEASE": 5.0}
slots = budget.slots(sys.argv[2], config)
held = threading.Barrier(4)
def call():
    with slots:
        held.wait()
        threading.Event().wait()
for _ in range(3):
    threading.Thread(target=call, daemon=True).start()
held.wait()
print("holding", flush=True)
threading.Event().wait()
"""


@pytest.fixture
def queued(app, redis_server):
    """The app's jobs go to a queue of this test's own on the real Redis."""
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = redis_server
    app.config["MAILCHIMP_SYNC_QUEUE"] = f"test-{uuid.uuid4().hex[:8]}"
    return Queue(app.config["MAILCHIMP_SYNC_QUEUE"], connection=Redis.from_url(redis_server))


def run_workers(app, emulator, count: int) -> None:
    """*count* workers side by side, each until the queue is empty."""
    env = subprocess_env(
        app,
        emulator,
        FLASK_MAILCHIMP_SYNC_REDIS_URL=app.config["MAILCHIMP_SYNC_REDIS_URL"],
        FLASK_MAILCHIMP_SYNC_QUEUE=app.config["MAILCHIMP_SYNC_QUEUE"],
    )
    command = [sys.executable, "-m", "flask", "mailchimp", "worker", "--burst"]
    workers = [
        subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=120)
        assert worker.returncode == 0, errors


def test_three_workers_share_one_connection_budget(app, emulator, mailchimp_account, queued):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    emulator.faults.latency = 0.2
    barrier = f"barrier-{uuid.uuid4().hex}"
    for _ in range(3):  # each job: 30 calls, 10 at a time (a process's own cap)
        queued.enqueue("tests.worker_jobs.hammer", 30, barrier, 3)
    run_workers(app, emulator, 3)
    key, connections = mailchimp_account.api_key, emulator.state.connections
    assert connections.refused[key] == 0  # never over Mailchimp's cap: no 429
    assert connections.peak[key] == 10  # and the whole budget was in use
    reads = [r for r in emulator.state.requests if r["path"].startswith("/lists/")]
    assert len(reads) == 90 and {r["status"] for r in reads} == {200}


def test_a_killed_worker_gives_its_connections_back(redis_server):
    key = f"{uuid.uuid4().hex}-us6"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server, key], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    config = {"MAILCHIMP_SYNC_REDIS_URL": redis_server, "MAILCHIMP_SYNC_MAX_CONNECTIONS": 3}
    slots = budget.slots(key, config)
    assert slots.in_use() == 3
    holder.kill()
    holder.wait(timeout=10)
    holder.stdout.close()
    assert slots.in_use() == 3  # a dead process cannot give them back itself...
    # ...its leases run out (5 s, each on its own millisecond) and the whole budget is
    # this process's again: three calls held at once.
    all_held = threading.Barrier(4, timeout=20)

    def call():
        with slots:
            all_held.wait()
            all_held.wait()

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    all_held.wait()
    assert slots.in_use() == 3
    all_held.wait()
    for caller in callers:
        caller.join(timeout=10)
    assert slots.in_use() == 0


def test_two_audiences_sync_side_by_side_on_two_workers(
    app, staff_client, emulator, mailchimp_account, queued
):
    consignors, customers = mailchimp_account.consignors.id, mailchimp_account.customers.id
    with app.app_context():
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"consignor": consignors, "customer": customers})
        add_consignor(db, "Ada Lovelace", "ada@mailbox.shop")
        add_opted_in_customers(db, 3)
    emulator.faults.latency = 0.3
    token = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    staff_client.post(PAGE + "sync", data={"csrf_token": token, "sync": "Sync"})
    assert "one per audience" in staff_client.get(PAGE).get_data(as_text=True)
    run_workers(app, emulator, 2)
    first, second = finished_runs(app)
    assert {first.audiences, second.audiences} == {consignors, customers}
    assert max(first.started_at, second.started_at) < min(first.finished_at, second.finished_at)
    assert set(emulator.state.members(consignors)) == {"ada@mailbox.shop"}
    assert len(emulator.state.members(customers)) == 3


def test_the_same_audience_never_syncs_twice_at_once(app, emulator, mailchimp_account, queued):
    audience = mailchimp_account.customers.id
    with app.app_context():
        from example_app import mailchimp
        from example_app.models import db

        connect_shop(mailchimp_account.api_key, {"customer": audience})
        add_opted_in_customers(db, 3)
        # Two runs of one audience queued at once (two clicks racing, say).
        runs = [mailchimp.models.SyncRun(state="queued", audiences=audience) for _ in range(2)]
        db.session.add_all(runs)
        db.session.commit()
        for run in runs:
            enqueue_run(run.id)
    emulator.faults.latency = 0.3
    run_workers(app, emulator, 2)
    first, second = sorted(finished_runs(app), key=lambda run: run.started_at)
    assert first.finished_at <= second.started_at  # one after the other
    assert len(emulator.state.members(audience)) == 3


def finished_runs(app):
    """Every run, each done, with aware times."""
    with app.app_context():
        from example_app import mailchimp

        runs = mailchimp.db.session.query(mailchimp.models.SyncRun).order_by("id").all()
        for run in runs:
            assert run.state == "done", run.error
            run.started_at, run.finished_at = as_utc(run.started_at), as_utc(run.finished_at)
        return runs
