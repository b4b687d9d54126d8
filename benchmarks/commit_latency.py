"""What a host commit pays for the plugin: flip one customer's marketing flag, commit.

Runs the same loop in two fresh processes, the example shop without the extension
registered and with it (real-time updates on, delivering to the Mailchimp emulator
running as a third process), and prints one JSON line:

    python benchmarks/commit_latency.py [--commits 2000] [--db-url URL]

``added_ms`` is the median commit latency with the plugin minus without; the target is
under 1 ms. ``network_calls_in_commit`` counts socket connections opened by the
committing thread during the timed commits; the target is 0 (delivery happens on
other threads, after the commit).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, commits: int, db_url: str, api_url: str | None, api_key: str | None) -> dict:
    from flask import Flask

    import example_app
    from example_app.models import Customer, CustomerPreferences, db

    if mode == "with":
        app = example_app.create_app(
            {"SQLALCHEMY_DATABASE_URI": db_url, "MAILCHIMP_SYNC_API_URL": api_url}
        )
    else:  # the same shop and models, the extension never registered
        app = Flask("shop_without_plugin")
        app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI=db_url)
        db.init_app(app)
    with app.app_context():
        db.drop_all()
        db.create_all()
        customer = Customer(first_name="Ben", last_name="Baker", email="ben@mailbox.shop")
        customer.preferences = CustomerPreferences(accepts_marketing=True)
        db.session.add(customer)
        db.session.commit()
        if mode == "with":
            _connect(example_app.mailchimp, api_url, api_key)
        connects = _count_connects(threading.get_ident())
        timings = []
        for n in range(commits):
            started = time.perf_counter()
            customer.preferences.accepts_marketing = n % 2 == 1
            db.session.commit()
            timings.append((time.perf_counter() - started) * 1000)
        if mode == "with":
            from flask_mailchimp_sync.testing import stop_jobs

            stop_jobs(app, timeout=120)
    return {
        "median_ms": statistics.median(timings),
        "p95_ms": sorted(timings)[int(len(timings) * 0.95)],
        "network_calls_in_commit": connects["count"],
    }


def _connect(mailchimp, api_url: str, api_key: str) -> None:
    import requests

    lists = requests.get(api_url + "lists", auth=("x", api_key), timeout=10).json()["lists"]
    store = mailchimp.settings_store()
    store.save_account(api_key, account_id="bench", account_name="Bench")
    store.set_audience("customer", lists[0]["id"], name="Customers", tag="Customer")
    store.get().realtime = True
    mailchimp.db.session.commit()
    # The staff's first Sync: real-time deliveries to the audience start after it.
    from flask_mailchimp_sync.engine.runner import SyncRunner
    from flask_mailchimp_sync.jobs import start_sync

    run = start_sync(mailchimp, enqueue=False, trigger="bench")
    assert SyncRunner(mailchimp, run.id).execute().state == "done"


def _count_connects(thread_id: int) -> dict:
    """Count connections opened by the committing thread (delivery threads are free to)."""
    counter = {"count": 0}
    original = socket.socket.connect

    def connect(self, address):
        if threading.get_ident() == thread_id:
            counter["count"] += 1
        return original(self, address)

    socket.socket.connect = connect
    return counter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--mode", choices=["with", "without"], help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child process: measure one side
        print(json.dumps(measure(args.mode, args.commits, args.db_url, args.api_url, args.api_key)))
        return

    folder = tempfile.mkdtemp()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "flask_mailchimp_sync.testing.emulator", "--audience", "Customers"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info = json.loads(emulator.stdout.readline())
        results = {}
        for mode in ("without", "with"):
            db_url = args.db_url or f"sqlite:///{folder}/{mode}.db"
            command = [
                sys.executable, __file__, "--mode", mode, "--commits", str(args.commits),
                "--db-url", db_url, "--api-url", info["api_url"], "--api-key", info["api_key"],
            ]  # fmt: skip
            out = subprocess.run(
                command, capture_output=True, text=True, check=True, env=os.environ
            )
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        emulator.terminate()
        emulator.wait()
    print(
        json.dumps(
            {
                "commits": args.commits,
                "database": (args.db_url or "sqlite").split(":")[0],
                "median_ms_without": round(results["without"]["median_ms"], 3),
                "median_ms_with": round(results["with"]["median_ms"], 3),
                "added_ms": round(
                    results["with"]["median_ms"] - results["without"]["median_ms"], 3
                ),
                "p95_ms_without": round(results["without"]["p95_ms"], 3),
                "p95_ms_with": round(results["with"]["p95_ms"], 3),
                "network_calls_in_commit": results["with"]["network_calls_in_commit"],
            }
        )
    )


if __name__ == "__main__":
    main()
