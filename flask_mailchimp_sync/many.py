"""SQL for many values at once: a large shop's contacts come a thousand at a time.

:func:`one_of` tests a column against many values; :func:`insert` writes many rows,
:func:`insert_new` those not there yet. On PostgreSQL (psycopg 3) they take the fast
way: one array parameter instead of a parameter per value (a long ``IN`` list costs
the driver more to send than the database to answer), ``COPY`` instead of multi-row
``INSERT``, and arrays unnested into ``INSERT ... ON CONFLICT DO NOTHING``. Every other
database gets the plain SQL. Either way the rows join the session's transaction, and
nothing is kept in the session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def one_of(session: Any, column: Any, values: Iterable[Any]) -> Any:
    """SQL: *column* (of a table, or a model's attribute) is one of *values* (for the
    database of *session*, or of a connection)."""
    element = column.__clause_element__() if hasattr(column, "__clause_element__") else column
    values = list(values)
    bind = session.get_bind(clause=element) if hasattr(session, "get_bind") else session
    if _fast(bind):
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(element.type))
        return element == sa.any_(array)
    return element.in_(values)


def _fast(bind: Any) -> bool:
    dialect = bind.dialect
    return bool(dialect.name == "postgresql" and dialect.driver == "psycopg")


def insert(session: Any, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert *rows* (dicts by column name) into *table*; column defaults that are plain
    values fill what a row leaves out, as an ``INSERT`` would."""
    if not rows:
        return
    connection = session.connection(bind_arguments={"clause": table})
    if not _fast(connection):
        session.execute(table.insert(), rows)
        return
    names, values = _filled(table, rows)
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    cursor = connection.connection.driver_connection.cursor()
    with cursor, cursor.copy(statement) as copy:
        for row in values:
            copy.write_row(row)


def insert_new(
    session: Any,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    update: Sequence[str] = (),
    key: Sequence[Any] = (),
) -> bool:
    """Insert *rows*, skipping those a unique constraint says are there already (another
    writer added them meanwhile), or setting just the columns *update* of those (found
    by the unique columns *key*), in one statement on PostgreSQL (psycopg 3): an array
    a column, unnested. Returns ``False``, inserting nothing, on other databases."""
    connection = session.connection(bind_arguments={"clause": table})
    if not _fast(connection):
        return False
    if not rows:
        return True
    names, values = _filled(table, rows)
    by_column = zip(*values, strict=True)
    columns = []
    for name, column in zip(names, by_column, strict=True):
        array = postgresql.ARRAY(table.c[name].type)
        columns.append(sa.func.unnest(sa.cast(sa.bindparam(None, list(column), array), array)))
    insert = postgresql.insert(table).from_select(names, sa.select(*columns))
    if update:
        changed = {name: insert.excluded[name] for name in update}
        session.execute(insert.on_conflict_do_update(index_elements=key, set_=changed))
    else:
        session.execute(insert.on_conflict_do_nothing())
    return True


def _filled(table: Any, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The columns *rows* set (and those with plain defaults), and each row's values."""
    defaults = {
        column.name: column.default.arg
        for column in table.columns
        if column.default is not None and column.default.is_scalar
    }
    names = list(dict.fromkeys([*rows[0], *(name for name in defaults if name not in rows[0])]))
    return names, [[row[name] if name in row else defaults[name] for name in names] for row in rows]
