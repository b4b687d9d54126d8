"""Host shops shaped unlike the example shop, to test behaviour on more than one shape.

Each host has two contact models:

- ``Patron`` (role ``customer``): the marketing flag ``opt_in`` on its own row;
- ``Supplier`` (role ``consignor``): the opt-in ``marketing_ok`` on a related
  ``SupplierPrefs`` row, read the way the shape says.

Shapes:

- ``row``: both flags are plain columns (the supplier keeps its own ``opt_in`` too,
  which the ``row`` shape reads instead of the related row);
- ``path``: the supplier's flag through the dotted path ``"prefs.marketing_ok"``;
- ``callable``: the supplier's flag through a callable on the related row, and the
  patron's through a callable on its own row;
- ``based``: flags on the rows, and a ``model_class`` that gives every table (the
  extension's too, were they built on it) an ``id`` key and NOT NULL timestamps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.model import Model

from flask_mailchimp_sync import MailchimpSync

SHAPES = ("row", "path", "callable", "based")

_names = itertools.count()


def _now() -> datetime:
    return datetime.now(UTC)


class StampedModel(Model):
    """A host base model in the style of many shops: an id and timestamps everywhere."""

    id = sa.Column(sa.Integer, primary_key=True)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=_now)
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=_now, onupdate=_now)


@dataclass
class Host:
    shape: str
    app: Flask
    db: SQLAlchemy
    mailchimp: MailchimpSync
    Patron: Any
    Supplier: Any
    SupplierPrefs: Any

    # -- the shop's own operations, each one committed like a request would --------------

    def add_patron(self, email: str | None, *, opt_in: bool = True) -> Any:
        patron = self.Patron(email=email, opt_in=opt_in)
        self.db.session.add(patron)
        self.db.session.commit()
        return patron

    def add_supplier(self, email: str | None, *, opt_in: bool = True) -> Any:
        supplier = self.Supplier(email=email, opt_in=opt_in)
        supplier.prefs = self.SupplierPrefs(marketing_ok=opt_in)
        self.db.session.add(supplier)
        self.db.session.commit()
        return supplier

    def set_flag(self, contact: Any, value: bool) -> None:
        if isinstance(contact, self.Supplier) and self.shape in ("path", "callable"):
            contact.prefs.marketing_ok = value
        else:
            contact.opt_in = value
        self.db.session.commit()

    def flag(self, contact: Any) -> bool:
        if isinstance(contact, self.Supplier) and self.shape in ("path", "callable"):
            return bool(contact.prefs and contact.prefs.marketing_ok)
        return bool(contact.opt_in)

    def set_email(self, contact: Any, email: str | None) -> None:
        contact.email = email
        self.db.session.commit()

    def delete(self, contact: Any) -> None:
        self.db.session.delete(contact)
        self.db.session.commit()

    def contacts(self) -> list[Any]:
        session = self.db.session
        return [*session.query(self.Patron).all(), *session.query(self.Supplier).all()]


def make_host(shape: str, database_url: str, api_url: str, **source_options: Any) -> Host:
    """A host app of *shape* on *database_url*, talking to the Mailchimp at *api_url*.

    Its tables are created; the extension is registered but not connected.
    *source_options* (``merge_fields=``, ``tags=``...) go to both sources' ``add_source``.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown host shape {shape!r}")
    suffix = f"{shape}{next(_names)}"
    db = SQLAlchemy(model_class=StampedModel) if shape == "based" else SQLAlchemy()
    based = shape == "based"

    class Patron(db.Model):  # type: ignore[name-defined]
        __tablename__ = f"patrons_{suffix}"
        if not based:
            id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))
        opt_in = sa.Column(sa.Boolean, nullable=False, default=False)

    class Supplier(db.Model):  # type: ignore[name-defined]
        __tablename__ = f"suppliers_{suffix}"
        if not based:
            id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))
        opt_in = sa.Column(sa.Boolean, nullable=False, default=False)
        prefs = db.relationship(lambda: SupplierPrefs, uselist=False, cascade="all, delete-orphan")

    class SupplierPrefs(db.Model):  # type: ignore[name-defined]
        __tablename__ = f"supplier_prefs_{suffix}"
        if not based:
            id = sa.Column(sa.Integer, primary_key=True)
        supplier_id = sa.Column(
            sa.Integer, sa.ForeignKey(f"suppliers_{suffix}.id"), nullable=False, unique=True
        )
        marketing_ok = sa.Column(sa.Boolean, nullable=False, default=False)

    mailchimp = MailchimpSync(db=db)
    if shape == "callable":
        mailchimp.add_source(
            Patron,
            role="customer",
            email="email",
            marketing=lambda p: bool(p.opt_in),
            set_marketing=lambda p, value: setattr(p, "opt_in", value),
            **source_options,
        )
        mailchimp.add_source(
            Supplier,
            role="consignor",
            email="email",
            marketing=lambda s: bool(s.prefs and s.prefs.marketing_ok),
            set_marketing=lambda s, value: setattr(s.prefs, "marketing_ok", value),
            **source_options,
        )
    else:
        mailchimp.add_source(
            Patron, role="customer", email="email", marketing="opt_in", **source_options
        )
        mailchimp.add_source(
            Supplier,
            role="consignor",
            email="email",
            marketing="prefs.marketing_ok" if shape == "path" else "opt_in",
            **source_options,
        )
    mailchimp.authorize(lambda: True)

    app = Flask(f"host_{suffix}")
    app.config.update(
        TESTING=True,
        SECRET_KEY="host-secret",
        SQLALCHEMY_DATABASE_URI=database_url,
        MAILCHIMP_SYNC_API_URL=api_url,
        MAILCHIMP_SYNC_TIMEOUT=30.0,  # long: see conftest's app
        MAILCHIMP_SYNC_RETRY_BACKOFF=0.01,
        WTF_CSRF_ENABLED=False,
    )
    db.init_app(app)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
    return Host(shape, app, db, mailchimp, Patron, Supplier, SupplierPrefs)


def drop_host(host: Host) -> None:
    from flask_mailchimp_sync.testing import stop_jobs

    stop_jobs(host.app)
    with host.app.app_context():
        host.db.session.remove()
        host.db.drop_all()
        host.db.engine.dispose()


def connect(host: Host, api_key: str, audience_id: str, *, realtime: bool = True) -> None:
    """Connect the host to one shared audience for both roles (needs an app context)."""
    store = host.mailchimp.settings_store()
    store.save_account(api_key, account_id="acc", account_name="Host shop")
    for role in ("customer", "consignor"):
        store.set_audience(role, audience_id, name="Everyone", tag=role.title())
    store.get().realtime = realtime
    host.db.session.commit()


def sync(host: Host, **options: Any) -> Any:
    """A Sync (or preview, ``dry_run=True``) run to its end in this process."""
    from flask_mailchimp_sync.engine.runner import SyncRunner
    from flask_mailchimp_sync.jobs import start_sync

    run = start_sync(host.mailchimp, enqueue=False, trigger="test", **options)
    return SyncRunner(host.mailchimp, run.id).execute()


def drain(host: Host) -> Any:
    """Deliver the outbox now, whatever its retry times say."""
    from flask_mailchimp_sync.engine.delivery import drain as drain_outbox

    return drain_outbox(host.mailchimp, due_only=False)


def settle(host: Host, deliver: str) -> None:
    """Let the change reach Mailchimp: a Sync (``"sync"``), or the real-time delivery."""
    from flask_mailchimp_sync.testing import wait_for_jobs

    if deliver == "sync":
        assert sync(host).state == "done"
    else:
        wait_for_jobs(host.app)  # the delivery the commit queued (it holds the lock)
        assert drain(host).error is None  # and anything left
