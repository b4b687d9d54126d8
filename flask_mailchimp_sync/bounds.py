"""Every string the extension stores fits its column.

PostgreSQL refuses a value longer than its ``VARCHAR(n)`` and fails the whole
transaction with it (a sync run, or the host's own commit), while SQLite keeps it as it
is. So values from outside (the shop's rows, Mailchimp's answers) are measured here,
against the column itself, before they are written: a value that identifies something
is refused with a reason, a value only ever shown is shortened.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

#: Text columns have no limit in the database; what is shown from one is capped here.
TEXT_LIMIT = 2000
ELLIPSIS = "…"


def limit(model: Any, column: str) -> int:
    """How many characters *column* of *model* holds."""
    return _limits(model.__table__)[column]


@functools.cache
def _limits(table: Any) -> dict[str, int]:
    # Read once per table: every staged contact is measured against every column.
    return {
        column.name: int(getattr(column.type, "length", None) or TEXT_LIMIT)
        for column in table.columns
    }


def problem(model: Any, values: Mapping[str, Any]) -> str | None:
    """Why *values* cannot be stored in *model*'s table (a sentence for the run report)."""
    limits = _limits(model.__table__)
    for column, value in values.items():
        if isinstance(value, str) and len(value) > limits[column]:
            return (
                f"its {column.replace('_', ' ')} is longer than {limits[column]} "
                "characters, more than the extension can store"
            )
    return None


def fits(model: Any, column: str, value: str) -> bool:
    return len(value) <= limit(model, column)


def fit(model: Any, column: str, value: Any) -> Any:
    """A string *value* cut to *column*'s length, the cut marked with an ellipsis: for
    what is only shown (a name, a reason), never for what identifies something."""
    if not isinstance(value, str) or len(value) <= limit(model, column):
        return value
    return value[: limit(model, column) - 1] + ELLIPSIS


def fitted(model: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """*values*, each :func:`fit` to its column."""
    return {column: fit(model, column, value) for column, value in values.items()}
