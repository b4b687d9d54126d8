"""Real time under load: the shop in several processes, Redis, workers, Mailchimp away.

    python benchmarks/realtime_bench.py [--rate 50] [--seconds 20] [--clients 8]
        [--web-workers 2] [--workers 2] [--latency 0.05] [--db-url URL]

Runs, all on 127.0.0.1: a redis-server, the Mailchimp emulator in its own process
(``--latency`` seconds added to every request), the example shop under gunicorn
(``--web-workers`` processes) and ``--workers`` ``flask mailchimp worker`` processes.
Seeds customers (every other one opted in), connects the shop and runs the staff's
first Sync (real-time deliveries start after it). Then ``--clients`` HTTP clients,
each logged in as staff, flip marketing flags through the shop's own customer page,
``--rate`` flips a second in all for ``--seconds``, each flip a different customer:
on (the member is added) or off (archived). It waits for delivery, compares the
emulator with the shop and prints one JSON line:

- ``flips``, ``delivered`` (flips whose member is as the shop says), ``lost``;
- ``write_requests``, ``read_requests``: the plugin's requests while flipping and
  delivering;
- ``latency_p50_s``, ``latency_p99_s``: from sending a flip to its member's change in
  the emulator;
- ``commit_added_ms_p50`` (and p99): the time each commit spent in the plugin's
  session hooks, measured inside the web workers (see ``realtime_gunicorn.py``);
- ``max_inflight``: the most simultaneous connections the emulator saw;
- ``workers``, ``web_workers``, ``mismatched`` (customers, flipped or not, whose
  member differs from the shop at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAFF = ("staff@marigold.shop", "consign-demo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def seed(db_url: str, customers: int) -> None:
    """Staff, and *customers* customers: the odd ones opted in."""
    import sqlalchemy as sa

    from example_app import create_app
    from example_app.models import Customer, CustomerPreferences, Staff, db

    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url})
    with app.app_context():
        db.drop_all()
        db.create_all()
        staff = Staff(email=STAFF[0], name="Bench Staff")
        staff.set_password(STAFF[1])
        db.session.add(staff)
        numbers = range(1, customers + 1)
        rows = [{"id": n, "first_name": "Cus", "last_name": f"Tomer{n}", "email": _email(n)}
                for n in numbers]  # fmt: skip
        db.session.execute(sa.insert(Customer), rows)
        prefs = [{"customer_id": n, "accepts_marketing": n % 2 == 1} for n in numbers]
        db.session.execute(sa.insert(CustomerPreferences), prefs)
        db.session.commit()
        if db_url.startswith("sqlite"):
            # Several processes write at once: readers must not block the writer.
            db.session.execute(sa.text("PRAGMA journal_mode=WAL"))
        db.engine.dispose()


class Stack:
    """The processes of the run, stopped (each by its own handle) when it ends."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[Any]] = []

    def start(self, command: list[str], env: dict[str, str], **options: Any) -> Any:
        process = subprocess.Popen(command, env=env, cwd=ROOT, **options)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Client:
    """One member of staff flipping flags through the shop's customer page."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        login = self.http.get(f"{base}/login", timeout=30).text
        self.http.post(
            f"{base}/login",
            data={"email": STAFF[0], "password": STAFF[1], "csrf_token": _token(login)},
            allow_redirects=False,
            timeout=30,
        ).raise_for_status()
        # Logging in starts a new session: its forms carry a new token.
        self.token = _token(self.http.get(f"{base}/customers/1", timeout=30).text)

    def flip(self, customer_id: int, on: bool) -> int:
        data = {"csrf_token": self.token}
        if on:
            data["accepts_marketing"] = "y"
        response = self.http.post(
            f"{self.base}/customers/{customer_id}", data=data, allow_redirects=False, timeout=30
        )
        return response.status_code


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def flip_all(base: str, clients: int, rate: float, total: int) -> list[dict[str, Any]]:
    """*total* flips at *rate* a second from *clients* threads: flip n is customer n+1
    (odd ones are opted in: turned off; even ones turned on)."""
    sessions = [Client(base) for _ in range(clients)]
    flips: list[dict[str, Any]] = []
    counter = iter(range(total))
    lock = threading.Lock()
    started = time.time() + 0.5

    def work(client: Client) -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            time.sleep(max(0.0, started + n / rate - time.time()))
            customer_id = n + 1
            on = customer_id % 2 == 0
            sent = time.time()
            status = client.flip(customer_id, on)
            with lock:
                flips.append({"customer": customer_id, "on": on, "sent": sent,
                              "status": status, "answered": time.time()})  # fmt: skip

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return flips


def members(control: str, audience: str) -> dict[str, str]:
    held = requests.get(f"{control}lists/{audience}/members", timeout=60).json()
    return {m["email_address"].lower(): m["status"] for m in held}


def shop_flags(db_url: str) -> dict[str, bool]:
    """Each customer's address and marketing flag, as the shop holds them now."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT c.email, p.accepts_marketing FROM customers c "
                "JOIN customer_preferences p ON p.customer_id = c.id"
            )
        )
        flags = {email.lower(): bool(flag) for email, flag in rows}
    engine.dispose()
    return flags


def matches(flag: bool, status: str | None) -> bool:
    """Whether Mailchimp holds what the shop's flag says (never sent is fine when off)."""
    return status == "subscribed" if flag else status in (None, "archived")


def expected(flag: bool) -> str:
    return "subscribed" if flag else "archived"


def wait_delivered(control: str, audience: str, flips: list[dict[str, Any]], patience: float):
    """Until every flip's member is as the flip left it (or *patience* runs out)."""
    deadline = time.time() + patience
    while True:
        held = members(control, audience)
        done = sum(1 for f in flips if held.get(_email(f["customer"])) == expected(f["on"]))
        if done == len(flips) or time.time() > deadline:
            return done, held
        time.sleep(0.5)


def _email(customer_id: int) -> str:
    return f"customer{customer_id}@mailbox.shop"


def latencies(changes: list[list[Any]], flips: list[dict[str, Any]]) -> list[float]:
    """Seconds from each flip's request to the first change of its member to what the
    flip asked for (one flip per customer, so the first such change is the flip's)."""
    first: dict[tuple[str, str], float] = {}
    for at, _audience, email, status in changes:
        first.setdefault((email, status), at)
    found = []
    for flip in flips:
        at = first.get((_email(flip["customer"]), expected(flip["on"])))
        if at is not None:
            found.append(max(0.0, at - flip["sent"]))
    return found


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="flips a second, in all")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--patience", type=float, default=120.0, help="wait for delivery (s)")
    args = parser.parse_args()
    total = int(args.rate * args.seconds)
    folder = tempfile.mkdtemp()
    db_url = args.db_url or f"sqlite:///{folder}/shop.db"
    seed(db_url, customers=total + 100)

    stack = Stack()
    try:
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        stack.start(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            dict(os.environ), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(redis_port)
        emulator = stack.start(
            [sys.executable, "-m", "flask_mailchimp_sync.testing.emulator",
             "--audience", "Customers", "--latency", str(args.latency)],
            dict(os.environ), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        info = json.loads(emulator.stdout.readline())
        api_url, api_key = info["api_url"], info["api_key"]
        audience = info["audiences"]["Customers"]
        control = api_url.replace("/3.0/", "/_emulator/")
        env = dict(
            os.environ,
            FLASK_APP="example_app:create_app",
            SHOP_DATABASE_URL=db_url,
            SHOP_SECRET_KEY="realtime-bench",
            FLASK_MAILCHIMP_SYNC_API_URL=api_url,
            FLASK_MAILCHIMP_SYNC_REDIS_URL=redis_url,
            BENCH_REDIS_URL=redis_url,
            BENCH_COMMIT_LIST="bench:commit_ms",
            PYTHONPATH=str(ROOT),
        )
        flask = [sys.executable, "-m", "flask", "mailchimp"]
        subprocess.run(
            [*flask, "connect", "--api-key", api_key, "--customer-audience", audience,
             "--consignor-audience", audience],
            env=env, cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        # The staff's first Sync: real-time deliveries to the audience start after it.
        subprocess.run([*flask, "sync"], env=env, cwd=ROOT, check=True, capture_output=True)
        web_port = free_port()
        stack.start(
            [sys.executable, "-m", "gunicorn", "--workers", str(args.web_workers),
             "--bind", f"127.0.0.1:{web_port}", "--config",
             str(ROOT / "benchmarks" / "realtime_gunicorn.py"), "example_app:create_app()"],
            env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(args.workers):
            stack.start(
                [*flask, "worker"], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        wait_for_port(web_port)
        requests.post(f"{control}connections/reset", timeout=30)
        requests.post(f"{control}changes", timeout=30)
        seen = len(requests.get(f"{control}requests", timeout=60).json())

        flips = flip_all(f"http://127.0.0.1:{web_port}", args.clients, args.rate, total)
        flipped = [f for f in flips if f["status"] == 302]
        delivered, held = wait_delivered(control, audience, flipped, args.patience)
        time.sleep(1)  # anything still on its way shows up as a mismatch below

        changes = requests.get(f"{control}changes", timeout=60).json()
        log = requests.get(f"{control}requests", params={"since": seen}, timeout=60).json()
        plugin = [r for r in log if r["user_agent"].startswith("flask-mailchimp-sync")]
        peak = requests.get(f"{control}connections", timeout=30).json()["peak"]
        from redis import Redis

        commit_ms = [float(v) for v in Redis.from_url(redis_url).lrange("bench:commit_ms", 0, -1)]
        held = members(control, audience)
        flags = shop_flags(db_url)
        mismatched = sum(1 for email, flag in flags.items() if not matches(flag, held.get(email)))
        waits = latencies(changes, flipped)
        report = {
            "flips": len(flipped),
            "refused_flips": len(flips) - len(flipped),
            "delivered": delivered,
            "lost": len(flipped) - delivered,
            "mismatched": mismatched,
            "write_requests": sum(1 for r in plugin if r["method"] != "GET"),
            "read_requests": sum(1 for r in plugin if r["method"] == "GET"),
            "latency_p50_s": _round(percentile(waits, 0.5)),
            "latency_p99_s": _round(percentile(waits, 0.99)),
            "latency_max_s": _round(max(waits) if waits else None),
            "commit_added_ms_p50": _round(statistics.median(commit_ms) if commit_ms else None, 3),
            "commit_added_ms_p99": _round(percentile(commit_ms, 0.99), 3),
            "commits_timed": len(commit_ms),
            "max_inflight": max(peak.values(), default=0),
            "workers": args.workers,
            "web_workers": args.web_workers,
            "clients": args.clients,
            "rate": args.rate,
            "seconds": args.seconds,
            "latency_s": args.latency,
            "database": db_url.split(":")[0],
        }
    finally:
        stack.stop()
    print(json.dumps(report))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    main()
