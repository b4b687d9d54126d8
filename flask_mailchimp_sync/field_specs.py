"""How one field of a contact is read from a host's row.

Every field accepts one of three things, so that hosts of any shape fit:

- a string: an attribute path on the model (``"email"``), which may follow
  relationships (``"profile.accepts_marketing"``; related rows are loaded with one
  extra query per chunk, not one per contact). Paths are resolved on first use, once
  SQLAlchemy has configured the mappers, so relationships declared as backrefs on
  another model work;
- a SQL expression (a column, ``func.lower(Customer.email)``, a correlated
  ``scalar_subquery()``, a hybrid property): evaluated by the database;
- a callable taking the model instance (``lambda c: c.name.split()[0]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import orm
from sqlalchemy.sql.elements import ColumnElement

from .exceptions import ConfigurationError

FieldSpec = str | ColumnElement[Any] | Callable[[Any], Any]


class FieldReader:
    """One way of reading a value from a row: attribute path, SQL expression or callable."""

    def __init__(self, model: type, name: str, spec: FieldSpec) -> None:
        self.model = model
        self.name = name
        self.label = f"mailchimp_sync_{name}"
        self.path: tuple[str, ...] = ()
        self.expression: ColumnElement[Any] | None = None
        self.function: Callable[[Any], Any] | None = None
        if isinstance(spec, str):
            self.path = tuple(spec.split("."))
            if not all(self.path):
                raise ValueError(
                    f"{spec!r} is not an attribute path for the contact's {name}: pass an "
                    "attribute name (dotted to follow relationships), a SQL expression or a "
                    "callable."
                )
        elif hasattr(spec, "__clause_element__") or isinstance(spec, ColumnElement):
            self.expression = spec  # type: ignore[assignment]
        elif callable(spec):
            self.function = spec
        else:
            raise TypeError(
                f"The contact's {name} must be an attribute name, a SQL expression or a "
                f"callable, not {type(spec).__name__}."
            )

    def check_path(self) -> None:
        """Raise :class:`ConfigurationError` unless the path leads somewhere: every hop but
        the last a relationship. Needs configured mappers (backrefs exist only then)."""
        owner: Any = self.model
        for n, hop in enumerate(self.path):
            attribute = getattr(owner, hop, None)
            if attribute is None:
                raise ConfigurationError(
                    f"{owner.__name__} has no attribute {hop!r} (the contact's {self.name} "
                    f"is read from {'.'.join(self.path)!r}). Pass an attribute name (dotted to "
                    "follow relationships), a SQL expression or a callable."
                )
            if n == len(self.path) - 1:
                return
            prop = getattr(attribute, "property", None)
            if not isinstance(prop, orm.RelationshipProperty):
                raise ConfigurationError(
                    f"{owner.__name__}.{hop} is not a relationship, so the path "
                    f"{'.'.join(self.path)!r} (the contact's {self.name}) cannot go past it. "
                    "Pass a callable taking the instance instead."
                )
            owner = prop.mapper.class_

    def relationship_path(self) -> tuple[str, ...]:
        """The relationship hops of an attribute path (all but its last segment)."""
        return self.path[:-1]

    def read(self, instance: Any, row: Any) -> Any:
        if self.expression is not None:
            return getattr(row, self.label)
        if self.function is not None:
            return self.function(instance)
        if len(self.path) == 1:  # most fields: one attribute of the row
            return getattr(instance, self.path[0])
        value = instance
        for attribute in self.path:
            if value is None:
                return None
            value = getattr(value, attribute)
        return value


def text_value(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def is_consent(value: Any) -> bool:
    # Only an explicit true is consent: NULL, a missing related row, "no" or "" are not.
    return value is True or (isinstance(value, int) and value == 1)
