"""Waiting for the extension's in-process jobs, in tests (yours and ours) and at shutdown."""

from __future__ import annotations

import time
from concurrent.futures import wait

from flask import Flask

from .._state import app_state
from ..jobs import redis_url


def wait_for_jobs(app: Flask, timeout: float = 30.0) -> None:
    """Wait until in-process jobs (and the drains commits asked for) are done.

    With RQ, workers do the jobs and this returns at once.
    """
    state = app_state(app)
    deadline = time.monotonic() + timeout
    in_process = redis_url(app.config) is None
    while time.monotonic() < deadline:
        dispatching = in_process and state.dispatcher is not None and state.dispatcher.busy
        futures = list(state.futures)
        if not dispatching and all(f.done() for f in futures):
            return
        wait(futures, timeout=0.05) if futures else time.sleep(0.01)
    raise TimeoutError(f"Mailchimp jobs were still running after {timeout} s.")


def stop_jobs(app: Flask, timeout: float = 30.0) -> None:
    """Finish in-process jobs and stop scheduling new ones."""
    wait_for_jobs(app, timeout)
    state = app_state(app)
    if state.dispatcher is not None:
        state.dispatcher.stop()
    if state.executor is not None:
        state.executor.shutdown(wait=True)
