"""A sync at shop scale, against the emulator with real latency.

    python benchmarks/sync_bench.py [--contacts 100000] [--latency 0.05] [--db-url URL]

Seeds N contacts into the example shop (half consignors, half customers, 2% invalid
addresses, 10% of people in both roles) in SQLite, or the database ``--db-url`` names;
starts the Mailchimp emulator as its own process with ``--latency`` seconds added to
every request; then runs the real sync job in a fresh process, three times:

- the full first sync (``wall_s``, ``write_requests`` ... at the top level),
- ``resync_nochange``: again, nothing changed,
- ``resync_1pct``: again after 1% of the contacts changed their name,

and the naive way other integrations sync (``naive``: one PUT per contact, one after the
other, timed on a sample and extrapolated), with ``speedup`` = naive wall time / ours.
Prints one JSON line. Each sync's ``peak_rss_mb`` is the syncing process's own peak.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INVALID = ["", "not-an-email", "anna@", "x@y", "no email"]


def seed(db_url: str, contacts: int) -> None:
    """Half consignors, half customers; 10% of people both; 2% bad addresses."""
    import sqlalchemy as sa

    from example_app import create_app
    from example_app.models import Consignor, Customer, CustomerPreferences, db

    rng = random.Random(7)
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url})
    with app.app_context():
        db.drop_all()
        db.create_all()
        consignors = contacts // 2
        customers = contacts - consignors
        both = contacts // 10 // 2  # people counted once in each role

        def email(n: int) -> str | None:
            if rng.random() < 0.02:
                return rng.choice(INVALID) or None
            return f"person{n}@mailbox.shop"

        rows = [{"id": n + 1, "name": f"Con Signor{n}", "email": email(n),
                 "phone": f"555-{n % 10000:04d}", "marketing_opt_in": rng.random() < 0.8}
                for n in range(consignors)]  # fmt: skip
        db.session.execute(sa.insert(Consignor), rows)
        # the first `both` customers are the same people as the first consignors
        people = list(range(both)) + list(range(consignors, consignors + customers - both))
        rows = [{"id": k + 1, "first_name": "Cus", "last_name": f"Tomer{n}", "email": email(n)}
                for k, n in enumerate(people)]  # fmt: skip
        db.session.execute(sa.insert(Customer), rows)
        prefs = [
            {"customer_id": k + 1, "accepts_marketing": rng.random() < 0.8}
            for k in range(len(people))
        ]
        db.session.execute(sa.insert(CustomerPreferences), prefs)
        db.session.commit()


def child(step: str, db_url: str, api_url: str, api_key: str, audience: str) -> dict:
    """One sync in this (fresh) process; what it cost."""
    import sqlalchemy as sa

    from example_app import create_app, mailchimp
    from example_app.models import Customer, db
    from flask_mailchimp_sync.engine.members import OUTCOMES
    from flask_mailchimp_sync.engine.runner import SyncRunner
    from flask_mailchimp_sync.jobs import start_sync

    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "MAILCHIMP_SYNC_API_URL": api_url})
    with app.app_context():
        if step == "full":
            store = mailchimp.settings_store()
            store.save_account(api_key, account_id="bench", account_name="Bench")
            for role in ("consignor", "customer"):
                store.set_audience(role, audience, name="Everyone", tag=role.title())
            store.get().realtime = False
            db.session.commit()
        if step == "resync_1pct":
            total = db.session.query(Customer).count()
            changed = list(range(1, total + 1, 100))  # 1% of customers: 0.5% of contacts...
            db.session.execute(
                sa.update(Customer).where(Customer.id.in_(changed)).values(last_name="Renamed")
            )
            from example_app.models import Consignor

            db.session.execute(
                sa.update(Consignor).where(Consignor.id.in_(changed)).values(name="Con Renamed")
            )  # ...and 1% of consignors: 1% of all contacts
            db.session.commit()
        started, cpu = time.perf_counter(), time.process_time()
        run = start_sync(mailchimp, enqueue=False, trigger="benchmark", full=False)
        run = SyncRunner(mailchimp, run.id).execute()
        result = {
            "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "peak_rss_mb": peak_rss_mb(),
            "state": run.state,
            "counts": {k: getattr(run, k) for k in OUTCOMES},
        }
        if run.error:
            result["error"] = run.error
        return result


def peak_rss_mb() -> float:
    """This process's own peak resident memory.

    Linux's ``VmHWM`` starts afresh at exec; ``ru_maxrss`` would carry over the peak of
    the parent that seeded the database (a fork inherits it), so it is only a fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def naive(api_url: str, api_key: str, audience: str, sample: int) -> float:
    """Seconds for *sample* contacts the way other integrations do it: one PUT each."""
    started = time.perf_counter()
    for n in range(sample):
        email = f"naive{n}@mailbox.shop"
        member = hashlib.md5(email.encode()).hexdigest()
        requests.put(
            f"{api_url}lists/{audience}/members/{member}",
            json={"email_address": email, "status_if_new": "subscribed",
                  "merge_fields": {"FNAME": "Nai", "LNAME": f"Ve{n}"}},
            auth=("naive", api_key),
            timeout=30,
        ).raise_for_status()  # fmt: skip
    return time.perf_counter() - started


def requests_since(control: str, start: int) -> tuple[int, int, int]:
    log = requests.get(f"{control}requests", params={"since": start}, timeout=60).json()
    writes = sum(1 for r in log if r["method"] != "GET")
    return writes, len(log) - writes, start + len(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--naive-sample", type=int, default=200)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--audience", help=argparse.SUPPRESS)
    args = parser.parse_args()
    db_url = args.db_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    if args.child:
        print(json.dumps(child(args.child, db_url, args.api_url, args.api_key, args.audience)))
        return

    seed(db_url, args.contacts)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "flask_mailchimp_sync.testing.emulator", "--audience", "Everyone",
         "--latency", str(args.latency)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info = json.loads(emulator.stdout.readline())
        api_url, api_key = info["api_url"], info["api_key"]
        audience = info["audiences"]["Everyone"]
        control = api_url.replace("/3.0/", "/_emulator/")
        report: dict = {"contacts": args.contacts, "latency_s": args.latency,
                        "database": db_url.split(":")[0]}  # fmt: skip
        seen = 0
        for step in ("full", "resync_nochange", "resync_1pct"):
            command = [
                sys.executable, __file__, "--child", step, "--db-url", db_url,
                "--api-url", api_url, "--api-key", api_key, "--audience", audience,
            ]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                raise SystemExit(out.stderr)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["write_requests"], result["read_requests"], seen = requests_since(control, seen)
            if step == "full":
                report.update(result)
            else:
                report[step] = result
        sample = min(args.naive_sample, args.contacts)
        naive_s = naive(api_url, api_key, audience, sample)
        extrapolated = naive_s / sample * args.contacts
        report["naive"] = {
            "sample": sample,
            "sample_wall_s": round(naive_s, 2),
            "wall_s": round(extrapolated, 1),
            "write_requests": args.contacts,
        }
        report["speedup"] = round(extrapolated / report["wall_s"], 1)
        members = requests.get(f"{control}state", timeout=60).json()["audiences"][0]["stats"]
        report["mailchimp_members"] = members
    finally:
        emulator.terminate()
        emulator.wait()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
