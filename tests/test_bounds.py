"""Every string the extension stores fits its column, and a bad row never stops a run.

The host here has columns wider than the extension's (a 400-character email column, text
keys of up to 100 characters), so a value too long for the extension's tables reaches it.
PostgreSQL refuses such a value (SQLite keeps it): each test checks the stored lengths,
so it means the same on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import MailchimpSync
from flask_mailchimp_sync.testing import stop_jobs, wait_for_jobs

from .conftest import database_url
from .helpers import connect_shop, make_host, sync

LONG_ADDRESS = "a" * 290 + "@mailbox.shop"  # 303 characters: no address, but it fits the host
LONG_KEY = "k" * 100


@pytest.fixture
def wide(tmp_path, emulator, mailchimp_account) -> Iterator[tuple[Any, SQLAlchemy, MailchimpSync]]:
    """A connected host whose email column and contact keys are wider than ours."""
    app, db, mailchimp = make_host(
        tmp_path, "wide", database_url=database_url(tmp_path), email_length=400, key_length=100
    )
    app.config.update(MAILCHIMP_SYNC_API_URL=emulator.api_url, MAILCHIMP_SYNC_RETRY_BACKOFF=0.01)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
        connect_shop(
            mailchimp_account.api_key,
            {"customer": mailchimp_account.customers.id},
            extension=mailchimp,
        )
    yield app, db, mailchimp
    stop_jobs(app)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def add(db: SQLAlchemy, mailchimp: MailchimpSync, key: str, email: str) -> None:
    (source,) = mailchimp.sources
    db.session.add(source.model(id=key, email=email, opted_in=True))
    db.session.commit()


def longest(db: SQLAlchemy, model: Any, *names: str) -> dict[str, int]:
    """The longest stored value of each column."""
    table = model.__table__
    found = db.session.execute(sa.select(*(sa.func.max(sa.func.length(table.c[n])) for n in names)))
    return dict(zip(names, (int(n or 0) for n in found.one()), strict=True))


def test_a_too_long_address_is_skipped_and_the_rest_syncs(wide, emulator, mailchimp_account):
    app, db, mailchimp = wide
    with app.app_context():
        add(db, mailchimp, "1", "ann@mailbox.shop")
        add(db, mailchimp, "2", LONG_ADDRESS)
        add(db, mailchimp, "3", "cy@mailbox.shop")
        run = sync(mailchimp)
        assert (run.state, run.error, run.added, run.skipped) == ("done", None, 2, 1)
        (item,) = db.session.query(mailchimp.models.SyncRunItem).all()
        assert item.outcome == "skipped" and "not a valid email address" in item.reason
        assert len(item.email) <= 255 and item.email.endswith("…")
        assert longest(db, mailchimp.models.SyncRunItem, "email", "contact_key") == {
            "email": 255,
            "contact_key": 1,
        }
    held = emulator.state.members(mailchimp_account.customers.id)
    assert sorted(held) == ["ann@mailbox.shop", "cy@mailbox.shop"]


def test_a_contact_key_too_long_for_its_column_is_skipped_with_a_reason(wide, emulator):
    app, db, mailchimp = wide
    with app.app_context():
        add(db, mailchimp, "1", "ann@mailbox.shop")
        add(db, mailchimp, LONG_KEY, "bo@mailbox.shop")
        run = sync(mailchimp)
        assert (run.state, run.added, run.skipped) == ("done", 1, 1)
        (item,) = db.session.query(mailchimp.models.SyncRunItem).all()
        assert (
            item.reason
            == "its contact key is longer than 64 characters, more than the extension can store"
        )
        assert item.email == "bo@mailbox.shop" and len(item.contact_key) <= 64
        models = mailchimp.models
        assert longest(db, models.ContactState, "contact_key") == {"contact_key": 1}


def test_a_contact_whose_key_is_too_long_never_breaks_the_hosts_commit(wide):
    app, db, mailchimp = wide
    with app.app_context():
        mailchimp.settings_store().get().realtime = True
        db.session.commit()
        add(db, mailchimp, LONG_KEY, "bo@mailbox.shop")
        add(db, mailchimp, "1", "ann@mailbox.shop")
        for contact in db.session.query(mailchimp.sources[0].model):
            contact.email = contact.email.replace("@", ".new@")
        db.session.commit()  # the outbox must not break the host's commit
        wait_for_jobs(app)
        Outbox = mailchimp.models.Outbox
        assert {row.contact_key for row in db.session.query(Outbox)} == {"1"}


def test_names_mailchimp_gives_are_shortened_to_fit(app, db, emulator):
    from example_app import mailchimp
    from flask_mailchimp_sync.connection import AudienceChoice, connect

    account, (audience,) = emulator.add_account_with_audiences("A" * 300, "B" * 300)
    settings = connect(mailchimp, account.api_key, {"customer": AudienceChoice(audience.id)})
    db.session.commit()
    assert len(settings.account_name) == 255 and settings.account_name.endswith("…")
    assert len(settings.audience_for("customer").audience_name) == 255


def test_a_source_whose_name_cannot_be_stored_is_refused_at_registration():
    db = SQLAlchemy()

    class Contact(db.Model):  # type: ignore[name-defined]
        __tablename__ = "c" * 150
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))

    with pytest.raises(ValueError, match="at most 200 characters"):
        MailchimpSync(db=db).add_source(Contact, role="r" * 60, email="email", marketing="email")
