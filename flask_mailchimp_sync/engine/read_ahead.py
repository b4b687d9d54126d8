"""Reading ahead: what a run needs next, read while it works on what it has.

- Mailchimp's changes are read by a thread of their own while the run stages the shop
  (:class:`Ahead`): the requests' latency is hidden behind the shop's reading.
- Staging a large shop alternates between waiting for the database (a chunk of the
  host's rows, then their links) and Python's own work (reading fields,
  fingerprinting). The links of the next chunk are read on a connection of their own
  while the run fingerprints the chunk before (:func:`link_reader`), so the database
  and Python work side by side, on two cores. Only committed rows are seen there, so
  the run commits before it stages. Where a second connection would not be one of its
  own (a session bound to a connection, as in a test's transaction; a single-connection
  pool), or would wait for the run's writes (SQLite locks the whole file), the links
  are read in line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import pool

from .. import many
from ..models import DEFAULT_STORE

T = TypeVar("T")

#: key -> (audience, member hash, fingerprint) of the contacts of one chunk.
LinksByKey = dict[str, tuple[str, str, str]]
#: Reads the links of (source name, keys); the result comes as a future.
LinkReading = Callable[[str, list[str]], "Future[LinksByKey]"]


@contextmanager
def link_reader(session: Any, Link: Any) -> Iterator[LinkReading]:
    """A function reading the links of (source name, keys), as a future."""
    engine = session.get_bind(clause=Link.__table__)
    if not _has_second_connection(engine):
        yield lambda source, keys: _done(read_links(session, Link, source, keys))
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mailchimp-links") as executor:
        connection = executor.submit(engine.connect).result()
        try:
            yield lambda source, keys: executor.submit(read_links, connection, Link, source, keys)
        finally:
            executor.submit(connection.close).result()


def read_links(connection: Any, Link: Any, source: str, keys: list[str]) -> LinksByKey:
    """The links of these contacts of *source* (on a session or a connection)."""
    rows = connection.execute(
        sa.select(Link.contact_key, Link.audience_id, Link.subscriber_hash, Link.fingerprint)
        .where(Link.store == DEFAULT_STORE, Link.source == source)
        .where(many.one_of(connection, Link.contact_key, keys))
    )
    return {key: (audience, member, print_) for key, audience, member, print_ in rows}


def _has_second_connection(engine: Any) -> bool:
    if not isinstance(engine, sa.Engine):
        return False  # bound to a connection: its transaction is not another's to see
    if isinstance(engine.pool, pool.StaticPool | pool.SingletonThreadPool):
        return False
    # SQLite locks the whole file: a reader beside the run's writes waits, or fails.
    return engine.dialect.name != "sqlite"


def _done(value: LinksByKey) -> Future[LinksByKey]:
    future: Future[LinksByKey] = Future()
    future.set_result(value)
    return future


class Ahead(Iterator[T]):
    """The items *produce()* yields, read by a thread of their own at most *size* ahead
    of the run: Mailchimp's pages come in while the run stages the shop, and memory
    stays flat however many there are. An error there is raised here, in order."""

    def __init__(self, produce: Callable[[], Iterable[T]], size: int = 1000) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._ended = False
        threading.Thread(
            target=self._run, args=(produce,), name="mailchimp-read-ahead", daemon=True
        ).start()

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self._ended = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop reading (the run ended early); what was read is dropped."""
        self._stop.set()

    def _run(self, produce: Callable[[], Iterable[T]]) -> None:
        try:
            for item in produce():
                if not self._put("item", item):
                    return
        except BaseException as error:  # raised in the run's thread instead
            self._put("error", error)
        else:
            self._put("end", None)

    def _put(self, kind: str, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
