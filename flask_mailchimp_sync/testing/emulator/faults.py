"""Fault injection: the ways a real Mailchimp misbehaves under load.

Kinds of fault:

``429``        Too Many Requests with Mailchimp's problem+json body
``429-bare``   the same with no body at all (what high volume often gets)
``403-bare``   a bodyless 403, as Mailchimp's edge sends when it throttles
``500``        Internal Server Error with a problem+json body
``503-bare``   Service Unavailable from the proxy, no body
``timeout``    the request is held ``hang_seconds``, then carried out and answered,
               so a client that gave up never learns it succeeded
``drop``       the connection is closed before anything is done or answered
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KINDS = ("429", "429-bare", "403-bare", "500", "503-bare", "timeout", "drop")


@dataclass
class Faults:
    """What goes wrong, and how slowly things go right. Safe to change while serving."""

    #: Seconds added to every API request (Mailchimp is some tens of ms away).
    latency: float = 0.0
    #: Mailchimp's cap on simultaneous connections per account; beyond it, 429.
    max_connections: int = 10
    #: How long a ``timeout`` fault holds a request.
    hang_seconds: float = 5.0
    #: Share of requests (0..1) that fail with one of ``random_kinds``.
    error_rate: float = 0.0
    random_kinds: tuple[str, ...] = ("429", "429-bare", "500", "503-bare", "timeout")
    seed: int | None = None
    _queued: deque[str] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def fail_next(self, count: int, kind: str = "429") -> None:
        """Make the next *count* API requests fail with *kind*."""
        if kind not in KINDS:
            raise ValueError(f"Unknown fault {kind!r}; choose one of {', '.join(KINDS)}.")
        with self._lock:
            self._queued.extend([kind] * count)

    @property
    def pending(self) -> int:
        """How many faults queued by :meth:`fail_next` are still to come."""
        with self._lock:
            return len(self._queued)

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
        self.latency = self.error_rate = 0.0

    def draw(self) -> str | None:
        """The fault for the request now arriving, if any."""
        with self._lock:
            if self._queued:
                return self._queued.popleft()
            if self.error_rate and self._random.random() < self.error_rate:
                return self._random.choice(self.random_kinds)
        return None

    def configure(self, **settings: Any) -> None:
        """Set faults from plain values (the control endpoint's JSON)."""
        for name in ("latency", "hang_seconds", "error_rate"):
            if name in settings:
                setattr(self, name, float(settings[name]))
        if "max_connections" in settings:
            self.max_connections = int(settings["max_connections"])
        if "random_kinds" in settings:
            kinds: tuple[str, ...] = tuple(settings["random_kinds"])
            if not set(kinds) <= set(KINDS):
                raise ValueError(f"Unknown fault in {kinds!r}.")
            self.random_kinds = kinds
        if "seed" in settings:
            self._random.seed(settings["seed"])
        if "fail_next" in settings:
            spec = settings["fail_next"]
            self.fail_next(int(spec["count"]), str(spec.get("kind", "429")))
