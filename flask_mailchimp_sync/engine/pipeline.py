"""Pages sent while the next ones are planned: Mailchimp's latency off the critical path.

Sending a page is mostly waiting for Mailchimp; planning and recording one is work for
this process and its database. So a page is sent from a thread while the run plans the
next, a few pages in flight at most, and each page's outcomes are recorded on the run's
own thread (which owns the database session), in the order the pages came.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Page = TypeVar("Page")

#: Pages sent at once: enough to hide a round trip behind the planning of the next.
DEPTH = 4


class Pipeline(Generic[Page]):
    """Sends pages with *send* in the background and hands each page and its result to
    *record*, on the caller's thread, oldest first. Use as a context manager."""

    def __init__(
        self,
        send: Callable[[Page], Any],
        record: Callable[[Page, Any], None],
        depth: int = DEPTH,
    ) -> None:
        self._send = send
        self._record = record
        self._depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=self._depth, thread_name_prefix="mc-send")
        self._flight: deque[tuple[Page, Future[Any]]] = deque()

    @property
    def busy(self) -> bool:
        """Whether pages are in flight (a page that depends on them waits: :meth:`flush`)."""
        return bool(self._flight)

    def submit(self, page: Page) -> None:
        """Send *page*; record the pages done meanwhile (all but *depth* of them)."""
        self._flight.append((page, self._pool.submit(self._send, page)))
        while self._flight and (len(self._flight) > self._depth or self._flight[0][1].done()):
            self._record_oldest()

    def flush(self) -> None:
        """Wait for every page in flight and record it."""
        while self._flight:
            self._record_oldest()

    def _record_oldest(self) -> None:
        page, future = self._flight.popleft()
        try:
            result = future.result()
        except BaseException:
            self._settle()
            raise
        self._record(page, result)

    def _settle(self) -> None:
        """A page failed: the others were sent (or are being sent), so record those that
        went through; their failure, if any, is the next run's to redo."""
        for page, future in self._flight:
            if future.exception() is None:
                self._record(page, future.result())
        self._flight.clear()

    def __enter__(self) -> Pipeline[Page]:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self._flight.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
