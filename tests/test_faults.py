"""Fault runs: each ends with Mailchimp holding exactly the shop's consent.

Nothing lost, nothing duplicated, nobody resubscribed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flask_mailchimp_sync.jobs import start_sync
from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import (
    RedisServer,
    assert_mailchimp_matches_shop,
    connect_shop,
    hold_requests_at,
    subprocess_env,
    sync,
)

ROOT = Path(__file__).resolve().parents[1]
needs_redis = pytest.mark.skipif(
    RedisServer.binary is None, reason="redis-server is not installed (CI installs it)"
)


def seed_shop(db, customers=600, consignors=200):
    from example_app.models import Consignor, Customer, CustomerPreferences

    db.session.add_all(
        Customer(first_name="C", last_name=str(n), email=f"c{n}@mailbox.shop",
                 preferences=CustomerPreferences(accepts_marketing=n % 4 != 0))
        for n in range(customers)
    )  # fmt: skip
    db.session.add_all(
        Consignor(name=f"Con {n}", email=f"c{n}@mailbox.shop" if n % 2 else f"k{n}@mailbox.shop",
                  marketing_opt_in=n % 3 != 0)
        for n in range(consignors)
    )  # fmt: skip
    db.session.commit()


def flip_some(db, step=7):
    """Real-time traffic: flags flipped, names changed, one address changed."""
    from example_app.models import Customer

    customers = db.session.query(Customer).order_by(Customer.id).all()
    for customer in customers[::step]:
        customer.preferences.accepts_marketing = not customer.preferences.accepts_marketing
        customer.last_name = f"{customer.last_name}-x"
    customers[1].email = "moved@fastpost.net"
    db.session.commit()


@needs_redis
def test_a_worker_killed_mid_sync_and_restarted(app, emulator, mailchimp_account):
    audience = mailchimp_account.customers.id
    redis = RedisServer().start()
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = redis.url
    worker_env = subprocess_env(
        app,
        emulator,
        FLASK_MAILCHIMP_SYNC_REDIS_URL=redis.url,
        FLASK_MAILCHIMP_SYNC_LOCK_TIMEOUT="1",
    )
    try:
        with app.app_context():
            from example_app import mailchimp
            from example_app.models import db

            connect_shop(mailchimp_account.api_key, {"customer": audience, "consignor": audience})
            seed_shop(db, customers=3000, consignors=500)
            start_sync(mailchimp)
        reached, release = hold_requests_at(emulator, audience, 800)  # then the kill
        emulator.faults.latency = 0.2
        worker = subprocess.Popen([sys.executable, "-m", "flask", "mailchimp", "worker"], env=worker_env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        reached.wait(timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        release()
        assert reached.is_set(), "the run never reached 800 members"
        emulator.faults.latency = 0
        assert 0 < len(emulator.state.members(audience)) < 3000
        time.sleep(1.2)  # the dead worker's locks expire
        with app.app_context():
            start_sync(mailchimp)  # staff press Sync again: the dead run no longer blocks it
        subprocess.run([sys.executable, "-m", "flask", "mailchimp", "worker", "--burst"], env=worker_env, cwd=ROOT,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        with app.app_context():
            runs = mailchimp.db.session.query(mailchimp.models.SyncRun).order_by("id").all()
            assert [r.state for r in runs if r.trigger == "button"] == ["failed", "done"]
            assert_mailchimp_matches_shop(emulator, audience)
    finally:
        redis.stop()


@needs_redis
def test_redis_stopped_and_restarted_while_changes_flow(app, emulator, mailchimp_account):
    from redis import Redis
    from rq import Queue, SimpleWorker

    audience = mailchimp_account.customers.id
    redis = RedisServer()
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = redis.url
    with app.app_context():
        from example_app.models import db

        connect_shop(
            mailchimp_account.api_key, {"customer": audience, "consignor": audience}, realtime=True
        )
        seed_shop(db)
        sync()
        flip_some(db)  # Redis is down: every commit still succeeds
        flip_some(db, step=5)
    redis.start()
    try:
        connection = Redis.from_url(redis.url)
        queue = Queue(app.config["MAILCHIMP_SYNC_QUEUE"], connection=connection)
        deadline = time.time() + 30
        while queue.count == 0 and time.time() < deadline:
            time.sleep(0.1)
        with app.app_context():
            SimpleWorker([queue], connection=connection).work(burst=True)
            assert_mailchimp_matches_shop(emulator, audience)
            from example_app import mailchimp

            Outbox = mailchimp.models.Outbox
            assert (
                mailchimp.db.session.query(Outbox).filter(Outbox.delivered_at.is_(None)).count()
                == 0
            )
    finally:
        redis.stop()


def test_thirty_percent_of_requests_failing(app, emulator, mailchimp_account):
    audience = mailchimp_account.customers.id
    app.config.update(MAILCHIMP_SYNC_TIMEOUT=0.3, MAILCHIMP_SYNC_MAX_RETRIES=8)
    emulator.faults.configure(
        error_rate=0.3, seed=11, hang_seconds=0.5,
        random_kinds=["429", "429-bare", "403-bare", "500", "503-bare", "timeout"],
    )  # fmt: skip
    emulator.state.add_member(audience, "c8@mailbox.shop", "unsubscribed")  # left before
    with app.app_context():
        from example_app.models import db

        connect_shop(
            mailchimp_account.api_key, {"customer": audience, "consignor": audience}, realtime=True
        )
        seed_shop(db, customers=300, consignors=100)
        run = sync()
        assert run.state == "done", run.error
        flip_some(db)
        wait_for_jobs(app, timeout=120)
        assert sync().state == "done"  # whatever a drain had to postpone, the sync covers
        emulator.faults.clear()
        assert emulator.state.member(audience, "c8@mailbox.shop").status == "unsubscribed"
        from example_app.models import Customer

        assert (
            db.session.query(Customer)
            .filter_by(email="c8@mailbox.shop")
            .one()
            .preferences.accepts_marketing
            is False
        )
        assert_mailchimp_matches_shop(emulator, audience)
