"""How a host model becomes contacts.

A host registers a model once, saying which role its rows play and how to read each
field (an attribute path, a SQL expression or a callable: see :mod:`.field_specs`).
Reading is streamed in primary-key order, a chunk at a time, so memory stays flat
however many contacts a shop has.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from . import emails, many
from .field_specs import FieldReader, FieldSpec, is_consent, text_value
from .merge_fields import MergeField, check_tag, formatted, tag_names
from .plain_reads import columns_query
from .watches import watches_for
from .write_back import WritesBack

log = logging.getLogger(__name__)

#: A callable returning a dict of extra merge fields, or typed declarations by merge tag.
MergeFieldsSpec = Callable[[Any], Mapping[str, Any]] | Mapping[str, MergeField]
#: A callable giving the names of the tags a contact should have (computed tags).
TagsSpec = Callable[[Any], Any]

#: Roles become Mailchimp tag names by default; Mailchimp caps a tag name at 100.
MAX_ROLE_LENGTH = 100


def default_tag(role: str) -> str:
    """The Mailchimp tag a role's members get unless staff name another."""
    return role.replace("_", " ").title()


@dataclass(frozen=True)
class Contact:
    """One row of a host model, as Mailchimp will see it."""

    source: str
    role: str
    key: str
    email: str | None
    first_name: str | None
    last_name: str | None
    marketing: bool
    merge_fields: Mapping[str, Any] = field(default_factory=dict)
    #: Computed tags (``tags=`` of the source); the role's tag is added per audience.
    tags: frozenset[str] = frozenset()
    #: What was changed to fit Mailchimp (a text cut to its limit), one sentence each.
    notes: tuple[str, ...] = ()


class ContactSource(WritesBack):
    """A host model registered as contacts of one role.

    Created by :meth:`MailchimpSync.add_source`; hosts rarely touch it directly.
    """

    def __init__(
        self,
        model: type,
        *,
        role: str,
        email: FieldSpec,
        marketing: FieldSpec,
        first_name: FieldSpec | None = None,
        last_name: FieldSpec | None = None,
        merge_fields: MergeFieldsSpec | None = None,
        tags: TagsSpec | None = None,
        set_marketing: Callable[[Any, bool], None] | None = None,
        watch: Mapping[type, Callable[[Any], Any]] | None = None,
        label: Callable[[Any], str | None] | None = None,
        url: Callable[[Any], str | None] | None = None,
    ) -> None:
        if not isinstance(role, str) or not role.strip() or len(role) > MAX_ROLE_LENGTH:
            raise ValueError(
                f"A source's role must be a non-blank name of at most {MAX_ROLE_LENGTH} "
                f"characters, such as 'customer' or 'consignor'; got {role!r}."
            )
        if merge_fields is not None and not (
            callable(merge_fields) or isinstance(merge_fields, Mapping)
        ):
            raise TypeError(
                "merge_fields must be a callable taking the model instance, or a dict of "
                "MergeField declarations by merge tag."
            )
        if tags is not None and not callable(tags):
            raise TypeError("tags must be a callable taking the model instance.")
        mapper: Any = sa.inspect(model, raiseerr=False)
        if not isinstance(mapper, orm.Mapper):
            raise TypeError(f"{model!r} is not a mapped SQLAlchemy model.")
        if len(mapper.primary_key) != 1:
            raise ValueError(
                f"{model.__name__} must have a single-column primary key to be a contact "
                "source; its rows are read in primary-key order."
            )
        self.model = model
        self.role = role.strip()
        self.name = f"{self.role}:{mapper.local_table.name}"  # type: ignore[attr-defined]
        self._primary_key: str = mapper.get_property_by_column(mapper.primary_key[0]).key
        self._merge_fields = merge_fields if callable(merge_fields) else None
        #: Typed merge fields by merge tag (from a dict of declarations).
        self.declared: dict[str, MergeField] = {}
        if isinstance(merge_fields, Mapping):
            for tag, declared in merge_fields.items():
                if not isinstance(declared, MergeField):
                    raise TypeError(
                        f"The merge field {tag!r} must be declared with MergeField(name, "
                        "type, value), such as MergeField('Store credit', 'number', "
                        "'credit')."
                    )
                self.declared[check_tag(tag)] = declared
        self._tags = tags
        self._set_marketing = set_marketing
        #: The fields as a plain-column query: worked out on first use (mappers are
        #: configured by then); ``False`` when the source needs its model instances.
        self._plain: sa.Select[Any] | bool | None = None
        self._label = label
        self._url = url
        self._resolved = False
        #: Deeper models the hooks watch on the host's word: model -> the contact
        #: instance(s) a changed row concerns.
        self.extra_watches: Mapping[type, Callable[[Any], Any]] = dict(watch or {})
        self._fields = [
            FieldReader(model, name, spec)
            for name, spec in (
                ("email", email),
                ("marketing", marketing),
                ("first_name", first_name),
                ("last_name", last_name),
            )
            if spec is not None
        ]
        self._typed: list[tuple[str, str, FieldReader]] = []
        for n, (tag, declared) in enumerate(self.declared.items()):
            typed = FieldReader(model, f"merge field {tag}", declared.value)
            typed.label = f"mailchimp_sync_merge_{n}"
            self._typed.append((tag, declared.type, typed))
        self._fields += [typed for _tag, _type, typed in self._typed]

        self._warn_unfollowable()

    def __repr__(self) -> str:
        return f"<ContactSource {self.name}>"

    def _warn_unfollowable(self) -> None:
        """Say once, at registration, which fields real-time updates cannot follow."""
        if self.extra_watches:
            return  # the host said what to watch beyond one relationship
        for f in self._fields:
            if len(f.path) > 2:
                log.warning(
                    "%s: the %s path %r goes more than one relationship deep, so real-time "
                    "updates miss changes to %r; the next Sync sends them. Pass watch={Model: "
                    "lambda row: contact} to add_source to follow it.",
                    self.name, f.name, ".".join(f.path), ".".join(f.path[:-1]),
                )  # fmt: skip

    def resolve(self) -> None:
        """Check the attribute paths, once the mappers are configured (the first use).

        Raises :class:`ConfigurationError` naming a path that leads nowhere.
        """
        if self._resolved:
            return
        orm.configure_mappers()  # creates the backrefs other models declare
        for f in self._fields:
            if f.path:
                f.check_path()
        self._resolved = True

    def _query(self) -> sa.Select[Any]:
        self.resolve()
        columns = [f.expression.label(f.label) for f in self._fields if f.expression is not None]
        query = sa.select(self.model, *columns)
        loads = {f.relationship_path() for f in self._fields if f.relationship_path()}
        for path in sorted(loads):
            query = query.options(self._eager_load(path))
        return query

    def _eager_load(self, path: tuple[str, ...]) -> orm.strategy_options._AbstractLoad:
        owner: Any = self.model
        load: Any = None
        for hop in path:
            attribute = getattr(owner, hop)
            load = orm.selectinload(attribute) if load is None else load.selectinload(attribute)
            owner = attribute.property.mapper.class_
        return load

    def contact_from_row(self, instance: Any, row: Any = None) -> Contact:
        """Read one contact from a model instance (and its query row, for SQL fields)."""
        values = {f.name: f.read(instance, row) for f in self._fields}
        return self._contact(getattr(instance, self._primary_key), values, instance)

    def _contact(self, key: Any, values: Mapping[str, Any], instance: Any) -> Contact:
        """The contact of these field values (*instance* for the callables, if any)."""
        extras = dict(self._merge_fields(instance) or {}) if self._merge_fields else {}
        notes = []
        for tag, kind, typed in self._typed:
            value, note = formatted(kind, values[typed.name])
            if value is not None:
                extras[tag] = value
            if note is not None:
                notes.append(f"{tag} {note}.")
        return Contact(
            source=self.name,
            role=self.role,
            key=str(key),
            email=text_value(values.get("email")),
            first_name=text_value(values.get("first_name")),
            last_name=text_value(values.get("last_name")),
            marketing=is_consent(values.get("marketing")),
            merge_fields=extras,
            tags=tag_names(self._tags(instance)) if self._tags is not None else frozenset(),
            notes=tuple(notes),
        )

    def iter_contacts(self, session: orm.Session, *, chunk_size: int = 1000) -> Iterator[Contact]:
        """Stream every contact, *chunk_size* rows per query, in primary-key order."""
        for chunk in self.iter_chunks(session, chunk_size=chunk_size):
            yield from chunk

    def iter_chunks(
        self, session: orm.Session, *, chunk_size: int = 1000
    ) -> Iterator[list[Contact]]:
        """Every contact, a chunk of *chunk_size* at a time, in primary-key order.

        Keyset pagination (``WHERE pk > last``) keeps each query cheap at any depth.
        A source whose fields are all columns (of the model or of a row one scalar
        relationship away) or SQL expressions is read as plain columns: no model
        instances, which is most of the cost of reading a large shop. Otherwise the
        session's identity map holds the instances only weakly, so a chunk is freed
        once its contacts are consumed.
        """
        columns = self._plain_query()
        primary_key = getattr(self.model, self._primary_key)
        query = (self._query() if columns is None else columns).order_by(primary_key)
        last_key = None
        while True:
            page = query if last_key is None else query.where(primary_key > last_key)
            rows = session.execute(page.limit(chunk_size)).all()
            if columns is None:
                yield [self.contact_from_row(row[0], row) for row in rows]
            else:
                yield [self._contact_from_columns(row) for row in rows]
            if len(rows) < chunk_size:
                return
            last = rows[-1][0]  # the key itself, or the instance
            last_key = last if columns is not None else getattr(last, self._primary_key)

    def contacts_by_keys(self, session: orm.Session, keys: list[str]) -> list[Contact]:
        """The contacts with these primary keys (as text) that still exist, 500 a query."""
        columns = self._plain_query()
        primary_key = getattr(self.model, self._primary_key)
        found: list[Contact] = []
        for start in range(0, len(keys), 500):
            chunk = [self._typed_key(key) for key in keys[start : start + 500]]
            if columns is None:
                rows = session.execute(
                    self._query().where(many.one_of(session, primary_key, chunk))
                )
                found += [self.contact_from_row(row[0], row) for row in rows]
            else:
                rows = session.execute(columns.where(many.one_of(session, primary_key, chunk)))
                found += [self._contact_from_columns(row) for row in rows]
        return found

    def _plain_query(self) -> sa.Select[Any] | None:
        """The fields as plain columns (the key first), or ``None`` when one needs the
        model instance: a callable (a field, ``merge_fields=`` or ``tags=``), or a path
        through a collection or further away."""
        if self._plain is None:
            self.resolve()  # the paths, checked once the mappers (and backrefs) exist
            query = None
            if self._merge_fields is None and self._tags is None:
                query = columns_query(self.model, self._primary_key, self._fields)
            self._plain = False if query is None else query
        return None if self._plain is False else self._plain  # type: ignore[return-value]

    def _contact_from_columns(self, row: Any) -> Contact:
        values = {f.name: row[n] for n, f in enumerate(self._fields, start=1)}
        return self._contact(row[0], values, None)

    def get_contact(self, session: orm.Session, key: Any) -> Contact | None:
        """Read the contact with primary key *key* (or its text), ``None`` when it is gone."""
        row = self._row(session, key)
        return None if row is None else self.contact_from_row(row[0], row)

    def describe(self, session: orm.Session, key: Any) -> tuple[str | None, str | None]:
        """How the pages name the contact with key *key*, and the URL of its page in the
        shop: ``label=`` and ``url=`` of :meth:`~.MailchimpSync.add_source`, else its
        name (or address) and no link. ``(None, None)`` when the contact is gone."""
        row = self._row(session, key)
        if row is None:
            return None, None
        instance = row[0]
        if self._label is not None:
            label = self._label(instance)
        else:
            contact = self.contact_from_row(instance, row)
            names = (contact.first_name, contact.last_name)
            label = " ".join(n.strip() for n in names if n and n.strip()) or contact.email
        return label or None, self._url(instance) if self._url is not None else None

    def get_instance(self, session: orm.Session, key: Any) -> Any:
        """The model instance with primary key *key* (or its text), to change it."""
        row = self._row(session, key)
        return None if row is None else row[0]

    def _row(self, session: orm.Session, key: Any) -> Any:
        primary_key = getattr(self.model, self._primary_key)
        return session.execute(self._query().where(primary_key == self._typed_key(key))).first()

    def _typed_key(self, key: Any) -> Any:
        # Keys travel as text (outbox, run records): compare them as the column's type.
        with contextlib.suppress(NotImplementedError, TypeError, ValueError):
            return getattr(self.model, self._primary_key).type.python_type(key)
        return key

    def existing_keys(self, session: orm.Session, keys: list[str]) -> set[str]:
        """Which of *keys* (as text) still have a row, read 500 at a time."""
        primary_key = getattr(self.model, self._primary_key)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = [self._typed_key(key) for key in keys[start : start + 500]]
            rows = session.execute(
                sa.select(primary_key).where(many.one_of(session, primary_key, chunk))
            )
            found.update(str(value) for value in rows.scalars())
        return found

    def key_of(self, instance: Any) -> str | None:
        """The contact key of a model instance (also of one just inserted in a flush)."""
        value = getattr(instance, self._primary_key, None)
        return None if value is None else str(value)

    def contacts_with_email(self, session: orm.Session, email: str) -> list[Contact]:
        """Every contact of this source whose address is *email* (same identity)."""
        return [
            self.contact_from_row(instance, row)
            for instance, row in self._with_email(session, email)
        ]

    def instances_with_email(self, session: orm.Session, email: str) -> list[Any]:
        """The model instances whose address is *email*, to change them."""
        return [instance for instance, _row in self._with_email(session, email)]

    def _with_email(self, session: orm.Session, email: str) -> list[tuple[Any, Any]]:
        """Rows whose address has *email*'s identity, decided in Python.

        The extension finds contacts by their stored links first; this reads the host's
        table for contacts no sync has linked yet. The SQL condition only narrows the
        rows read, and never leaves one out: it ignores case and surrounding whitespace
        and lets any character stand for a non-ASCII letter (SQL ``lower`` and ``trim``
        disagree with Python's). The identity decides.
        """
        field = self._field("email")
        assert field is not None
        wanted = emails.identity(email)
        column = field.expression
        if column is None and len(field.path) == 1 and field.path[0] in self._columns():
            column = getattr(self.model, field.path[0])
        query = self._query()
        if column is not None and wanted is not None:  # else read them all
            query = query.where(column.ilike(emails.like_pattern(wanted), escape="\\"))
        return [
            (row[0], row)
            for row in session.execute(query)
            if wanted is not None and emails.identity(text_value(field.read(row[0], row))) == wanted
        ]

    def _columns(self) -> set[str]:
        mapper: Any = sa.inspect(self.model)
        return {attribute.key for attribute in mapper.column_attrs}

    def watches(self) -> list[Any]:
        """Which model changes concern this source's contacts (see :mod:`.watches`)."""
        self.resolve()
        return watches_for(self)

    def reads_anything(self) -> bool:
        """Whether a field is a callable or SQL expression, whose reads are unknown."""
        return (
            self._merge_fields is not None
            or self._tags is not None
            or any(not f.path for f in self._fields)
        )

    def paths(self) -> list[tuple[str, ...]]:
        """The attribute paths the fields read."""
        return [f.path for f in self._fields if f.path]
