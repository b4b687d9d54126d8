"""Contacts' links read ahead, on a connection of their own.

Staging a large shop alternates between waiting for the database (a chunk of the host's
rows, then their links) and Python's own work (reading fields, fingerprinting). Here the
links of the next chunk are read on a second connection, by a thread, while the run
fingerprints the chunk before: the database and Python work side by side, on two cores
(at a million contacts on PostgreSQL, a third of a no-change resync).

That connection sees committed rows only, so the run commits before it stages, and it
reads in autocommit (no transaction held open while it waits). It comes from the host's
pool after the run's own: when the pool has none to spare within a second, or where a
second connection would not be one of its own (a session bound to a connection, as in
a test's transaction; a single-connection pool) or would wait for the run's writes
(SQLite locks the whole file), the links are read in line, as they were before. A host
whose sessions set things up per transaction (a schema, row-level security) turns it
off with ``MAILCHIMP_SYNC_READ_AHEAD = False``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as Waited
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import pool

from .. import many
from ..models import DEFAULT_STORE

#: key -> (audience, member hash, fingerprint) of the contacts of one chunk.
LinksByKey = dict[str, tuple[str, str, str]]
#: Reads the links of (source name, keys); the result comes as a future.
LinkReading = Callable[[str, list[str]], "Future[LinksByKey]"]
#: Seconds to wait for the pool's second connection before reading in line.
CONNECT_PATIENCE = 1.0


@contextmanager
def link_reader(session: Any, Link: Any, *, ahead: bool = True) -> Iterator[LinkReading]:
    """A function reading the links of (source name, keys), as a future: read ahead on
    a second connection where there can be one (see the module's notes)."""
    engine = session.get_bind(clause=Link.__table__)
    in_line: LinkReading = lambda source, keys: _done(read_links(session, Link, source, keys))  # noqa: E731
    if not (ahead and _has_second_connection(engine)):
        yield in_line
        return
    session.connection(bind_arguments={"clause": Link.__table__})  # the run's own first
    executor = ThreadPoolExecutor(1, thread_name_prefix="mailchimp-links")
    connecting = executor.submit(_connect, engine)
    try:
        connection = connecting.result(timeout=CONNECT_PATIENCE)
    except (Waited, sa.exc.SQLAlchemyError):
        connecting.add_done_callback(_close_when_connected)  # if the pool gives it later
        executor.shutdown(wait=False)
        yield in_line
        return
    try:
        yield lambda source, keys: executor.submit(read_links, connection, Link, source, keys)
    finally:
        executor.submit(connection.close).result()
        executor.shutdown()


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
    if isinstance(engine.pool, pool.StaticPool | pool.SingletonThreadPool | pool.AssertionPool):
        return False
    # SQLite locks the whole file: a reader beside the run's writes waits, or fails.
    return engine.dialect.name != "sqlite"


def _connect(engine: Any) -> Any:
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _close_when_connected(connecting: Future[Any]) -> None:
    if connecting.exception() is None:
        connecting.result().close()


def _done(value: LinksByKey) -> Future[LinksByKey]:
    future: Future[LinksByKey] = Future()
    future.set_result(value)
    return future
