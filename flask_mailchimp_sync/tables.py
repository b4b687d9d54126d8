"""Whether the extension's tables are in the host's database, and what to do when not.

A host adds the extension, then has to create its tables (``db.create_all()`` or a
migration). Until then every query fails with the database's own words ("no such
table", "relation does not exist"); the page and the CLI say the fix instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._state import app_state
from .exceptions import TablesMissingError

if TYPE_CHECKING:
    from .extension import MailchimpSync

CREATE = (
    'With Flask-Migrate, run `flask db migrate -m "mailchimp sync"` and then '
    "`flask db upgrade`; without migrations, call `db.create_all()` in an app context."
)


def require_tables(extension: MailchimpSync) -> None:
    """Raise :class:`TablesMissingError` unless every table and column is there.

    Asked once per app while the answer is yes: tables do not vanish.
    """
    state = app_state()
    if state.tables_ready:
        return
    problem = schema_problem(extension)
    if problem is not None:
        raise TablesMissingError(problem)
    state.tables_ready = True


def schema_problem(extension: MailchimpSync) -> str | None:
    """What is missing from the database, as a sentence saying the fix; ``None`` if nothing."""
    inspector = sa.inspect(extension.db.engine)
    tables = [model.__table__ for model in vars(extension.models).values()]
    present = set(inspector.get_table_names(schema=None))
    missing = [t.name for t in tables if t.name not in present]
    if missing:
        return (
            "The Mailchimp sync tables are not in the database yet (missing: "
            f"{', '.join(missing)}). {CREATE}"
        )
    columns = []
    for table in tables:
        there = {column["name"] for column in inspector.get_columns(table.name)}
        columns += [f"{table.name}.{c.name}" for c in table.columns if c.name not in there]
    if columns:
        return (
            "The Mailchimp sync tables are older than this version of the extension "
            f"(missing columns: {', '.join(columns)}). With Flask-Migrate, run "
            '`flask db migrate -m "mailchimp sync upgrade"` and then `flask db upgrade`; '
            "`db.create_all()` does not change tables that exist."
        )
    return None
