"""The connection budget: how many calls may be in flight to one Mailchimp account.

Mailchimp allows 10 simultaneous connections per account and answers 429 beyond.
Without Redis the budget is a semaphore per account in this process. With Redis
configured (``MAILCHIMP_SYNC_REDIS_URL`` or ``REDIS_URL``) every process shares one
budget per account: a slot is a *lease* in a Redis sorted set, scored by when it
expires, so a worker killed in the middle of a call gives its slot back by itself
once the lease runs out. Redis's own clock decides expiry (no two machines disagree).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Mailchimp's limit of simultaneous connections per account.
MAILCHIMP_LIMIT = 10
#: Seconds a lease outlives the longest call (a call's timeout, twice over).
LEASE_MARGIN = 5.0
#: Seconds between two looks for a free slot (at first; then longer, with jitter).
POLL = 0.005
MAX_POLL = 0.05

# Drop expired leases, then take a slot if one is free: one atomic step in Redis.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""


def redis_url(config: Mapping[str, Any]) -> str | None:
    """The Redis the extension uses (jobs and the shared budget), or ``None``."""
    own = config.get("MAILCHIMP_SYNC_REDIS_URL")
    if own is False:  # in-process jobs, even where the host's REDIS_URL is for others
        return None
    return own or config.get("REDIS_URL") or None


def account_id(api_key: str) -> str:
    """An account's name in the budget: a digest of its key, never the key itself."""
    return hashlib.sha256(api_key.strip().encode()).hexdigest()[:24]


def slots(api_key: str, config: Mapping[str, Any]) -> Any:
    """The budget of *api_key*'s account: a context manager held around each call."""
    limit = max(1, min(int(config.get("MAILCHIMP_SYNC_MAX_CONNECTIONS") or 10), MAILCHIMP_LIMIT))
    local = _local(account_id(api_key), limit)
    url = redis_url(config)
    if url is None:
        return local
    timeout = float(config.get("MAILCHIMP_SYNC_TIMEOUT") or 30.0)
    lease = float(config.get("MAILCHIMP_SYNC_CONNECTION_LEASE") or 2 * timeout + LEASE_MARGIN)
    return SharedSlots(local, _redis(url), account_id(api_key), limit, lease)


class SharedSlots:
    """One slot of the account's budget in Redis (and one of this process's own)."""

    def __init__(
        self, local: threading.Semaphore, redis: Redis, account: str, limit: int, lease: float
    ) -> None:
        self.local = local
        self.redis = redis
        self.key = f"mailchimp_sync:connections:{account}"
        self.limit = limit
        self.lease_ms = max(1, int(lease * 1000))
        self._held = threading.local()

    def __enter__(self) -> SharedSlots:
        self.local.acquire()
        try:
            self._held.lease = self._take()
        except BaseException:
            self.local.release()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        lease = getattr(self._held, "lease", None)
        self._held.lease = None
        try:
            if lease is not None:
                self.redis.zrem(self.key, lease)
        except RedisError:
            pass  # the lease expires by itself
        finally:
            self.local.release()

    def in_use(self) -> int:
        """Slots held now, by every process (expired leases not counted)."""
        seconds, micros = self.redis.time()
        return int(self.redis.zcount(self.key, seconds * 1000 + micros // 1000, "+inf"))

    def _take(self) -> str | None:
        """A lease on a free slot, waiting for one; ``None`` when Redis is unreachable
        (calls then count against this process's budget only)."""
        lease, pause = uuid.uuid4().hex, POLL
        while True:
            try:
                if self.redis.eval(_TAKE, 1, self.key, self.limit, self.lease_ms, lease):
                    return lease
            except RedisError as error:
                _warn_once(error)
                return None
            time.sleep(random.uniform(pause / 2, pause))  # jitter: waiters spread out
            pause = min(pause * 2, MAX_POLL)


_lock = threading.Lock()
_local_slots: dict[str, threading.BoundedSemaphore] = {}
_clients: dict[str, Redis] = {}
_warned: list[bool] = []


def _local(account: str, limit: int) -> threading.BoundedSemaphore:
    """One semaphore per account in this process."""
    with _lock:
        if account not in _local_slots:
            _local_slots[account] = threading.BoundedSemaphore(limit)
        return _local_slots[account]


def _redis(url: str) -> Redis:
    """One client (a connection pool, safe across threads) per Redis URL."""
    with _lock:
        if url not in _clients:
            _clients[url] = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        return _clients[url]


def _warn_once(error: RedisError) -> None:
    if not _warned:
        _warned.append(True)
        log.warning(
            "Redis is unreachable (%s): Mailchimp calls count against this process's own "
            "connection budget until it is back",
            error,
        )
