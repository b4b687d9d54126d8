"""The daily Sync: values that change with time alone (items expiring soon) are sent
again once a day, on RQ's scheduler where Redis is configured, else from a cron line."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import Flask

from ._state import real_app
from .exceptions import SyncRefused
from .jobs import execute_run, job_extension, job_timeout, queue, redis_url, start_sync
from .models import utcnow

log = logging.getLogger(__name__)

DAILY_JOB_PATH = "flask_mailchimp_sync.daily.run_daily_sync_job"


def next_daily(hour: int, now: datetime | None = None) -> datetime:
    """The next time it is *hour* o'clock UTC, after *now*."""
    now = now or utcnow()
    when = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return when if when > now else when + timedelta(days=1)


def cron_line(hour: int) -> str:
    """The crontab line that runs the daily Sync where no RQ scheduler can (UTC clock)."""
    return f"0 {hour} * * * cd /path/to/your/shop && flask mailchimp sync"


def schedule_daily_sync(app: Flask, hour: int | None) -> bool:
    """Schedule the next daily Sync on RQ's scheduler (cancel it for ``None``).

    Returns ``False`` where RQ cannot schedule it: no Redis is configured (jobs run in
    the web process, which keeps no timers), or the installed RQ has no ``enqueue_at``;
    then a cron line runs ``flask mailchimp sync`` instead (see :func:`cron_line`).
    Each day's job has its own id, so the job running now never stands for the next.
    """
    from rq import Queue

    if redis_url(app.config) is None or not hasattr(Queue, "enqueue_at"):
        return False
    from rq.exceptions import NoSuchJobError
    from rq.registry import ScheduledJobRegistry

    jobs = queue(app)
    registry = ScheduledJobRegistry(queue=jobs)
    prefix = _daily_prefix(app)
    for job_id in registry.get_job_ids():
        if job_id.startswith(prefix):
            try:
                registry.remove(job_id, delete_job=True)
            except NoSuchJobError:  # its data expired: the registry entry is gone now
                registry.remove(job_id)
    if hour is not None:
        when = next_daily(hour)
        jobs.enqueue_at(
            when, DAILY_JOB_PATH, job_id=f"{prefix}{when:%Y%m%d%H}", job_timeout=job_timeout(app)
        )
    return True


def _daily_prefix(app: Flask) -> str:
    return f"mailchimp-sync-daily-{app.config['MAILCHIMP_SYNC_QUEUE']}-"


def run_daily_sync_job() -> None:
    """The job: the daily Sync (values that change with time alone, such as items
    expiring soon, are sent again), then the next day's is scheduled."""
    extension = job_extension()
    app = real_app()
    hour = None
    try:
        settings = extension.settings_store().get()
        hour = settings.daily_sync_hour if settings is not None else None
        if hour is None:
            return  # switched off since it was scheduled
        run = start_sync(extension, trigger="daily", enqueue=False)
        execute_run(extension, run.id)
    except SyncRefused as refused:
        log.warning("The daily Mailchimp sync did not start: %s", refused)
    finally:
        extension.db.session.remove()
        if hour is not None:
            schedule_daily_sync(app, hour)
