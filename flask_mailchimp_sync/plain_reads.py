"""How a source's fields are read as plain columns, without model instances.

Building a model instance is most of the cost of reading a large shop. Where every
field is a column of the model, a column of a row one scalar relationship away, or a
SQL expression, the values are selected as they are; a source whose fields (or merge
fields, or tags) need the instance is read through its instances instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from .field_specs import FieldReader


def columns_query(
    model: Any, primary_key: str, fields: Sequence[FieldReader]
) -> sa.Select[Any] | None:
    """A query of the key and *fields* of *model* as plain columns, or ``None``.

    Only where reading the instance would give the very same values: no callable, and
    each path a column of the model or of a row one relationship away that is unique
    for the contact (many-to-one, or one-to-one on the related row's key). A related
    column is a correlated subquery (a missing row reads as ``None``, as it does on
    the instance): the database looks up each row of a chunk by its key, whatever its
    statistics say, where a join could be planned as a scan of the whole related table
    for every chunk.
    """
    mapper: Any = sa.inspect(model)
    selected: list[Any] = [getattr(model, primary_key)]
    for field_ in fields:
        if field_.expression is not None:
            selected.append(field_.expression)
            continue
        if field_.function is not None or len(field_.path) > 2:
            return None
        if len(field_.path) == 1:
            column = _column_attribute(mapper, model, field_.path[0])
        else:
            column = _related_column(mapper, *field_.path)
        if column is None:
            return None
        selected.append(column)
    return sa.select(*selected)


def _column_attribute(mapper: Any, owner: Any, name: str) -> Any:
    """``owner.name`` when it is a mapped column (not a property or a relationship)."""
    return getattr(owner, name) if name in mapper.column_attrs else None


def _related_column(mapper: Any, hop: str, name: str) -> Any:
    """Column *name* of the row relationship *hop* leads to, as a scalar subquery, when
    there is at most one such row (and it lives in another table)."""
    relationship = mapper.relationships.get(hop) if hop in mapper.relationships else None
    if relationship is None or relationship.uselist or relationship.secondary is not None:
        return None
    target = relationship.mapper
    if target.local_table is mapper.local_table:
        return None  # the same table on both sides: leave it to the instances
    if relationship.direction is not orm.MANYTOONE:
        remote = {column.key for column in relationship.remote_side}
        keys = [{c.key for c in target.primary_key}]
        keys += [
            {c.key for c in constraint.columns}
            for constraint in target.local_table.constraints
            if isinstance(constraint, sa.UniqueConstraint)
        ]
        if not any(key <= remote for key in keys):
            return None
    column = _column_attribute(target, target.class_, name)
    if column is None:
        return None
    return sa.select(column).where(relationship.primaryjoin).scalar_subquery()
