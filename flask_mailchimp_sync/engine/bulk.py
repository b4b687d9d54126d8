"""Many rows into one table, as fast as the database takes them.

A run writes a row per contact (its snapshot, then its links): a million at a time for
a large shop. PostgreSQL takes them by ``COPY`` (with psycopg 3), a few times faster
than multi-row ``INSERT``; every other database gets Core ``executemany``. Either way
the rows join the session's transaction, and nothing is kept in the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def insert(session: Any, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert *rows* (dicts by column name) into *table*; column defaults that are plain
    values fill what a row leaves out, as an ``INSERT`` would."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        session.execute(table.insert(), rows)
        return
    defaults = {
        column.name: column.default.arg
        for column in table.columns
        if column.default is not None and column.default.is_scalar
    }
    names = list(dict.fromkeys([*rows[0], *(name for name in defaults if name not in rows[0])]))
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    cursor = connection.connection.driver_connection.cursor()
    with cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[name] if name in row else defaults[name] for name in names])
