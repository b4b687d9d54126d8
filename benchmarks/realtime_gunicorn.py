"""gunicorn settings for ``realtime_bench.py``: what the plugin adds to each commit.

Each web worker times the extension's session hooks (the outbox row written in the
flush, the dispatcher nudged after the commit) and pushes each commit's total, in
milliseconds, to the Redis list the benchmark names in ``BENCH_REDIS_URL`` and
``BENCH_COMMIT_LIST``.
"""

from __future__ import annotations

import os
import time
from typing import Any


def post_worker_init(worker: Any) -> None:
    from redis import Redis

    from flask_mailchimp_sync import realtime

    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
    key = os.environ["BENCH_COMMIT_LIST"]
    after_flush, after_commit = realtime._after_flush, realtime._after_commit

    def timed_flush(extension: Any, session: Any) -> None:
        started = time.perf_counter()
        try:
            after_flush(extension, session)
        finally:
            spent = time.perf_counter() - started
            session.info["bench.hooks"] = session.info.get("bench.hooks", 0.0) + spent

    def timed_commit(extension: Any, session: Any) -> None:
        started = time.perf_counter()
        wrote = bool(session.info.get(realtime.WROTE_OUTBOX))
        after_commit(extension, session)
        spent = session.info.pop("bench.hooks", 0.0) + time.perf_counter() - started
        if wrote:  # a commit that changed a contact (not the login, say)
            redis.rpush(key, spent * 1000)

    # The hooks call these module functions by name, so replacing them times them.
    realtime._after_flush = timed_flush
    realtime._after_commit = timed_commit
