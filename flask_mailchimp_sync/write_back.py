"""Writing back (Mailchimp -> shop): what staff or subscribers changed in Mailchimp,
written to the host's rows through the fields a source reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .field_specs import FieldReader, is_consent


class WritesBack:
    """The writing half of a :class:`~.sources.ContactSource`: turning the marketing flag
    off, and writing a new address or names, where the source's fields allow it."""

    _fields: list[FieldReader]
    _set_marketing: Callable[[Any, bool], None] | None

    def _field(self, name: str) -> FieldReader | None:
        return next((f for f in self._fields if f.name == name), None)

    def withdraw_consent(self, instance: Any) -> bool:
        """Turn the marketing flag off; ``False`` when it was off already (or unwritable).

        A flag read through an attribute path is written through it; for a callable or
        SQL expression the host passes ``set_marketing`` to ``add_source``.
        """
        if self._set_marketing is not None:
            field = self._field("marketing")
            # An SQL expression needs a row to be read: then the flag is simply written.
            readable = field if field is not None and field.expression is None else None
            if readable is not None and not is_consent(readable.read(instance, None)):
                return False  # off already: nothing to write (or to count)
            self._set_marketing(instance, False)
            return True
        return self._write(instance, "marketing", False, only_if=is_consent)

    def change_email(self, instance: Any, email: str) -> bool:
        """Write a new address (attribute-path emails only)."""
        return self._write(instance, "email", email)

    def change_names(self, instance: Any, first_name: str | None, last_name: str | None) -> bool:
        """Write names from Mailchimp where the source reads them by attribute path."""
        changed = False
        for name, value in (("first_name", first_name), ("last_name", last_name)):
            if value is not None:
                changed |= self._write(instance, name, value)
        return changed

    def _write(
        self, instance: Any, name: str, value: Any, only_if: Callable[[Any], bool] | None = None
    ) -> bool:
        field = self._field(name)
        if field is None or not field.path:
            return False
        owner = instance
        for hop in field.path[:-1]:
            owner = getattr(owner, hop)
            if owner is None:  # no related row (e.g. no preferences): nothing to turn off
                return False
        current = getattr(owner, field.path[-1])
        if current == value or (only_if is not None and not only_if(current)):
            return False
        setattr(owner, field.path[-1], value)
        return True
