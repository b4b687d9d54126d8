"""Which changes of the host's rows concern which contacts, for real-time updates.

A source's contacts change when their own row changes, and when a row one relationship
away changes that a field reads: ``"prefs.marketing_ok"`` names it; a callable or SQL
expression may read any of them (what they read is unknown), so every model one
relationship away is watched for those. Deeper models are watched on the host's word
(``add_source(..., watch={Model: lambda row: contact})``).

Watches are worked out on first use, after the mappers are configured, so relationships
declared as backrefs are seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import orm

if TYPE_CHECKING:
    from .sources import ContactSource


@dataclass(frozen=True)
class Watch:
    """Changes of *model* (to *attributes*, or any column when ``None``) concern *source*;
    *contacts_of* gives the keys of the contacts a changed row concerns."""

    source: ContactSource
    model: type
    attributes: frozenset[str] | None
    contacts_of: Callable[[Any, Any], Iterable[str]]

    def concerned(self, instance: Any) -> bool:
        """Whether a pending change of *instance* touches what the source reads."""
        state = sa.inspect(instance)
        names = self.attributes
        if names is None:
            names = frozenset(a.key for a in state.mapper.column_attrs)
        return any(state.attrs[name].history.has_changes() for name in names if name in state.attrs)


def watches_for(source: ContactSource) -> list[Watch]:
    """Every watch of *source*: its own model, the models one relationship away that its
    fields read, and the host's own ``watch=`` entries."""
    model = source.model
    paths = source.paths()
    anything = source.reads_anything()
    own = None if anything else frozenset(path[0] for path in paths)
    watches = [Watch(source, model, own, lambda _session, row: _own_key(source, row))]
    mapper: Any = sa.inspect(model)
    for relationship in mapper.relationships:
        read = frozenset(p[1] for p in paths if len(p) == 2 and p[0] == relationship.key)
        if not read and not anything:
            continue
        contacts_of = _through(source, relationship)
        if contacts_of is not None:
            attributes = None if anything else read
            watches.append(Watch(source, relationship.mapper.class_, attributes, contacts_of))
    for watched, contact_of in source.extra_watches.items():
        watches.append(Watch(source, watched, None, _by_callable(source, contact_of)))
    return watches


def _own_key(source: ContactSource, row: Any) -> list[str]:
    key = source.key_of(row)
    return [] if key is None else [key]


def _through(
    source: ContactSource, relationship: orm.RelationshipProperty[Any]
) -> Callable[[Any, Any], Iterable[str]] | None:
    """How a related row leads back to the contacts, or ``None`` (many-to-many)."""
    if relationship.secondary is not None:
        return None
    mapper: Any = sa.inspect(source.model)
    pairs = relationship.local_remote_pairs or []
    primary_key = mapper.primary_key[0]
    for local, remote in pairs:
        if local is primary_key:  # the related row holds the contact's key
            attribute = relationship.mapper.get_property_by_column(remote).key
            return lambda _session, row: _keys([getattr(row, attribute, None)])
    for local, remote in pairs:  # the contact holds the related row's key
        foreign = mapper.get_property_by_column(local).key
        referenced = relationship.mapper.get_property_by_column(remote).key
        return lambda session, row: _keys(
            session.execute(
                sa.select(primary_key).where(
                    getattr(source.model, foreign) == getattr(row, referenced)
                )
            ).scalars()
        )
    return None


def _by_callable(
    source: ContactSource, contact_of: Callable[[Any], Any]
) -> Callable[[Any, Any], Iterable[str]]:
    def keys(_session: Any, row: Any) -> list[str]:
        found = contact_of(row)
        if found is None:
            return []
        instances = found if isinstance(found, Iterable) else [found]
        return [k for k in (source.key_of(i) for i in instances) if k is not None]

    return keys


def _keys(values: Iterable[Any]) -> list[str]:
    return [str(value) for value in values if value is not None]
