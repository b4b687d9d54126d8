"""Queue entry points: a real RQ queue on Redis when configured, else in-process.

With ``MAILCHIMP_SYNC_REDIS_URL`` (or ``REDIS_URL``) set, runs go to an RQ queue and
``flask mailchimp worker`` carries them out. Without Redis (the embedded default, for
a demo or a small shop) they run in a background thread of the web process. Either
way the job is :func:`run_sync_job` with a run id, and the run record is the truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context

from ._state import app_state, get_extension, real_app
from .budget import redis_url
from .call_policy import backoff_delay
from .engine import locks
from .engine.delivery import drain
from .engine.runner import SyncRunner, targets_for
from .exceptions import MailchimpSyncError, StoredKeyUnreadableError, SyncRefused
from .models import as_utc, utcnow

if TYPE_CHECKING:
    from .extension import MailchimpSync

log = logging.getLogger(__name__)

JOB_PATH = "flask_mailchimp_sync.jobs.run_sync_job"
DRAIN_JOB_PATH = "flask_mailchimp_sync.jobs.run_drain_job"
#: A burst of commits within this many seconds becomes one drain.
DEBOUNCE = 0.05


def start_sync(
    extension: MailchimpSync,
    *,
    role: str | None = None,
    dry_run: bool = False,
    full: bool = False,
    trigger: str = "button",
    enqueue: bool = True,
) -> Any:
    """Record a new run of every audience *role* goes to (all with ``None``) and queue
    it; :class:`SyncRefused` says why it cannot start."""
    audiences = _audiences_to_sync(extension, role, dry_run)
    return _record_runs(extension, [audiences], role, dry_run, full, trigger, enqueue)[0]


def start_syncs(
    extension: MailchimpSync,
    *,
    role: str | None = None,
    dry_run: bool = False,
    full: bool = False,
    trigger: str = "button",
) -> list[Any]:
    """Like :func:`start_sync`, but with RQ one run per audience: workers sync them
    side by side (each holds its own audience's lock). In-process, jobs run one at a
    time, so one run covers them all."""
    audiences = _audiences_to_sync(extension, role, dry_run)
    each = [[a] for a in audiences] if redis_url(current_app.config) else [audiences]
    return _record_runs(extension, each, role, dry_run, full, trigger, enqueue=True)


def _audiences_to_sync(extension: MailchimpSync, role: str | None, dry_run: bool) -> list[str]:
    """The audiences a run of *role* covers, once nothing stands in its way."""
    store = extension.settings_store()
    settings = store.get()
    if settings is None or not settings.is_connected:
        raise SyncRefused("Connect a Mailchimp account first.")
    if store.key_unreadable():
        raise SyncRefused(str(StoredKeyUnreadableError()))
    if role is not None and role not in extension.roles:
        raise SyncRefused(f"No contact source has the role {role!r}.")
    targets = targets_for(extension, settings, role)
    if not targets:
        raise SyncRefused("No audience is chosen yet: pick one for a role, then sync.")
    audiences = sorted({t.audience_id for t in targets})
    if not dry_run:
        _refuse_if_running(extension, audiences)
    return audiences


def _record_runs(
    extension: MailchimpSync,
    audience_sets: list[list[str]],
    role: str | None,
    dry_run: bool,
    full: bool,
    trigger: str,
    enqueue: bool,
) -> list[Any]:
    """A queued run for each set of audiences, committed, then handed to the queue."""
    session = extension.db.session
    runs = [
        extension.models.SyncRun(
            role=role, dry_run=dry_run, full=full, trigger=trigger, state="queued",
            audiences=",".join(audiences),
        )
        for audiences in audience_sets
    ]  # fmt: skip
    session.add_all(runs)
    session.commit()
    for run in runs if enqueue else ():
        try:
            enqueue_run(run.id)
        except Exception as error:
            _end_failed(extension, run.id, error)
            raise
    return runs


def execute_run(
    extension: MailchimpSync, run_id: int, on_progress: Callable[[Any], None] | None = None
) -> Any:
    """Carry out run *run_id* and return it; it ends done or failed, never left queued.

    The runner records its own failures once it runs; this catches what happens before
    (the key unreadable, a bug), so the run neither stays queued nor blocks the next.
    """
    try:
        return SyncRunner(extension, run_id).execute(on_progress=on_progress)
    except Exception as error:
        run = _end_failed(extension, run_id, error)
        if isinstance(error, MailchimpSyncError):
            return run  # explained in the run's record: not a crash
        raise


def _end_failed(extension: MailchimpSync, run_id: int, error: Exception) -> Any:
    """Mark run *run_id* failed with what *error* says staff can do (if it is unfinished)."""
    session = extension.db.session
    session.rollback()
    run = session.get(extension.models.SyncRun, run_id)
    if run is not None and run.state in ("queued", "running"):
        if isinstance(error, MailchimpSyncError):
            run.error = str(error)
        else:
            log.error("Mailchimp sync run %s failed before it started", run_id, exc_info=error)
            run.error = "The sync stopped on an unexpected error; the log has the details."
        run.state, run.finished_at = "failed", utcnow()
        session.commit()
    return run


def _refuse_if_running(extension: MailchimpSync, audiences: list[str]) -> None:
    models, session = extension.models, extension.db.session
    _fail_abandoned_runs(extension)
    # Real-time deliveries are short: a sync waits for them (see SyncRunner) instead.
    names = locks.audience_locks(audiences)
    if locks.held(session, models.Lock, names, except_deliveries=True):
        raise SyncRefused("A sync of this audience is already running.")
    SyncRun = models.SyncRun
    waiting = session.execute(
        sa.select(SyncRun).where(
            SyncRun.state.in_(["queued", "running"]), SyncRun.dry_run.is_(False)
        )
    ).scalars()
    if any(set(run.audiences.split(",")) & set(audiences) for run in waiting):
        raise SyncRefused("A sync of this audience is already queued or running.")


def _fail_abandoned_runs(extension: MailchimpSync) -> None:
    """Mark runs whose worker died as failed, so they no longer block new ones.

    A live run holds its audiences' locks and refreshes them after every page; a
    running run without them was killed. A queued run older than a lock's lifetime
    was lost with its queue (or never picked up).
    """
    models, session = extension.models, extension.db.session
    ttl = timedelta(seconds=float(current_app.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"]))
    unfinished = sa.select(models.SyncRun).where(models.SyncRun.state.in_(["queued", "running"]))
    for run in session.execute(unfinished).scalars():
        names = locks.audience_locks(run.audiences.split(","))
        if run.state == "running" and not run.dry_run:
            abandoned = not locks.held(session, models.Lock, names)
        else:  # queued, or a preview (which takes no locks)
            abandoned = utcnow() - as_utc(run.started_at or run.queued_at) > ttl
        if abandoned:
            run.state = "failed"
            run.error = (
                "The run stopped without finishing (its worker ended); "
                "the next sync does what is left."
            )
            run.finished_at = utcnow()
    session.commit()


def enqueue_run(run_id: int) -> None:
    """Hand a recorded run to the queue (RQ) or to this process's background thread."""
    app = real_app()
    url = redis_url(app.config)
    if url is None:
        _local(app).submit(_run_in_app, app, run_id)
        return
    from redis.exceptions import RedisError

    try:
        queue(app).enqueue(
            JOB_PATH, run_id, job_timeout=job_timeout(app), failure_ttl=7 * 24 * 3600
        )
    except RedisError as error:
        log.warning("Could not queue Mailchimp sync run %s: %s", run_id, error)
        raise SyncRefused(
            "The sync could not be queued: Redis is unreachable. Try again once it is back."
        ) from None


def enqueue_drain(app: Flask, delay: float = 0.0) -> None:
    """Queue a drain of the outbox (may raise when Redis is down: the caller retries)."""
    url = redis_url(app.config)
    if url is None:
        if delay:
            dispatcher(app).nudge_later(delay)
        else:
            _local(app).submit(_drain_in_app, app)
        return
    if delay:
        queue(app).enqueue_in(timedelta(seconds=delay), DRAIN_JOB_PATH)
    else:
        queue(app).enqueue(DRAIN_JOB_PATH, job_timeout=job_timeout(app))


def queue(app: Flask) -> Any:
    """The app's RQ queue (needs a Redis URL); the connection is made here, per use."""
    from redis import Redis
    from rq import Queue

    url = redis_url(app.config)
    if url is None:
        raise RuntimeError("No Redis is configured (MAILCHIMP_SYNC_REDIS_URL or REDIS_URL).")
    return Queue(app.config["MAILCHIMP_SYNC_QUEUE"], connection=Redis.from_url(url))


def job_timeout(app: Flask) -> int:
    # A live run refreshes its locks; a job four lock-lifetimes long is surely stuck.
    return int(app.config["MAILCHIMP_SYNC_LOCK_TIMEOUT"]) * 4


def job_extension() -> MailchimpSync:
    if not has_app_context():
        raise RuntimeError(
            "Mailchimp sync jobs need the Flask app: run the worker with `flask mailchimp worker`."
        )
    return get_extension()


def run_drain_job() -> None:
    """The job: deliver the outbox; schedules its own retry when something waits."""
    extension = job_extension()
    try:
        result = drain(extension)
    finally:
        extension.db.session.remove()
    if result.retry_in is not None:
        app = real_app()
        enqueue_drain(app, delay=max(result.retry_in, 0.5))


def _drain_in_app(app: Flask) -> None:
    with app.app_context():
        run_drain_job()


class Dispatcher:
    """Hands drains to the queue from a thread of its own.

    A commit only sets an event: the host's request never waits on Redis, and never
    fails because Redis is down. A failed hand-over is logged and tried again; the
    outbox keeps the changes meanwhile.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.busy = False
        self.stopped = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []

    def nudge(self) -> None:
        if self.stopped:
            return
        with self._lock:  # with the loop's reading of the event: neither is lost
            self.busy = True
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="mailchimp-sync-dispatcher", daemon=True
                )
                self._thread.start()

    def nudge_later(self, delay: float) -> None:
        """A retry: nudge again after *delay* seconds (in-process mode)."""
        timer = threading.Timer(delay, self.nudge)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def stop(self) -> None:
        self.stopped = True
        with self._lock:
            for timer in self._timers:
                timer.cancel()

    def _loop(self) -> None:
        failures = 0
        while True:
            self._wake.wait()
            time.sleep(DEBOUNCE)
            self._wake.clear()
            try:
                enqueue_drain(self.app)
                failures = 0
                with self._lock:  # a nudge since the hand-over keeps it busy
                    self.busy = self._wake.is_set()
            except Exception as error:  # Redis down, most likely
                failures += 1
                log.warning("Could not queue delivery of Mailchimp changes (%s); retrying", error)
                time.sleep(max(0.5, backoff_delay(failures, 0.5, cap=60.0)))
                self._wake.set()


def dispatcher(app: Flask) -> Dispatcher:
    state = app_state(app)
    with _dispatcher_lock:
        if state.dispatcher is None:
            state.dispatcher = Dispatcher(app)
    return state.dispatcher


_dispatcher_lock = threading.Lock()


def run_sync_job(run_id: int) -> None:
    """The job: carry out run *run_id* (needs the app context, which the worker provides)."""
    extension = job_extension()
    try:
        execute_run(extension, run_id)
    finally:
        extension.db.session.remove()


def _run_in_app(app: Flask, run_id: int) -> None:
    with app.app_context():
        run_sync_job(run_id)


def _local(app: Flask) -> Any:
    """Submit to this process's job thread (one: in-process jobs run one at a time)."""
    state = app_state(app)
    if state.executor is None:
        state.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailchimp-sync")
    return _Submitter(state)


class _Submitter:
    """Submits to the app's job thread, keeping the futures (to wait for them on shutdown)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def submit(self, fn: Any, /, *args: Any) -> Future[Any]:
        future = self.state.executor.submit(fn, *args)
        future.add_done_callback(_log_failure)
        self.state.futures = [f for f in self.state.futures if not f.done()] + [future]
        return future


def _log_failure(future: Future[Any]) -> None:
    if future.exception() is not None:
        log.error("A Mailchimp sync job failed", exc_info=future.exception())
