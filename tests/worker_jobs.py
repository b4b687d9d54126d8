"""Jobs the scale-out tests hand to real ``flask mailchimp worker`` processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from flask import current_app
from redis import Redis

from flask_mailchimp_sync._state import get_extension
from flask_mailchimp_sync.budget import redis_url
from flask_mailchimp_sync.client import MailchimpApi


def hammer(calls: int, barrier: str, parties: int) -> int:
    """Once *parties* of these jobs run at once, read the shop's audience *calls* times,
    ten calls at a time (as many as one process may have in flight)."""
    redis = Redis.from_url(redis_url(current_app.config))
    redis.incr(barrier)
    deadline = time.monotonic() + 30
    while int(redis.get(barrier) or 0) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers never started")
        time.sleep(0.01)
    store = get_extension().settings_store()
    audience_id = store.get().audiences[0].audience_id
    api = MailchimpApi(store.api_key() or "", current_app.config)
    with ThreadPoolExecutor(max_workers=10) as pool:
        return len(list(pool.map(lambda _n: api.audience(audience_id), range(calls))))
