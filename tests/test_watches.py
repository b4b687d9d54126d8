"""Real-time capture of shapes deeper than one relationship: ``watch=`` and the warning."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import MailchimpSync
from flask_mailchimp_sync.engine.runner import SyncRunner
from flask_mailchimp_sync.jobs import start_sync
from flask_mailchimp_sync.testing import stop_jobs, wait_for_jobs

from .conftest import database_url


def household_host(tmp_path, api_url, contacts_of=lambda settings: settings.household.members):
    """Members whose opt-in lives two relationships away: member -> household -> settings."""
    db = SQLAlchemy()

    class Household(db.Model):  # type: ignore[name-defined]
        __tablename__ = "households"
        id = sa.Column(sa.Integer, primary_key=True)
        settings = db.relationship(
            lambda: HouseholdSettings, uselist=False, back_populates="household"
        )
        members = db.relationship(lambda: Member, back_populates="household")

    class HouseholdSettings(db.Model):  # type: ignore[name-defined]
        __tablename__ = "household_settings"
        id = sa.Column(sa.Integer, primary_key=True)
        household_id = sa.Column(sa.ForeignKey("households.id"), nullable=False)
        newsletter = sa.Column(sa.Boolean, nullable=False, default=False)
        household = db.relationship(Household, back_populates="settings")

    class Member(db.Model):  # type: ignore[name-defined]
        __tablename__ = "household_members"
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))
        household_id = sa.Column(sa.ForeignKey("households.id"), nullable=False)
        household = db.relationship(Household, back_populates="members")

    mailchimp = MailchimpSync(db=db)
    mailchimp.add_source(
        Member,
        role="customer",
        email="email",
        marketing="household.settings.newsletter",
        watch={HouseholdSettings: contacts_of},
    )
    mailchimp.authorize(lambda: True)
    app = Flask("households")
    app.config.update(
        SECRET_KEY="s",
        SQLALCHEMY_DATABASE_URI=database_url(tmp_path),
        MAILCHIMP_SYNC_API_URL=api_url,
        MAILCHIMP_SYNC_RETRY_BACKOFF=0.01,
    )
    db.init_app(app)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
    return app, db, mailchimp, Household, HouseholdSettings, Member


@pytest.fixture
def households(tmp_path, emulator):
    built = household_host(tmp_path, emulator.api_url)
    yield built
    app, db = built[0], built[1]
    stop_jobs(app)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_a_path_deeper_than_one_relationship_is_named_at_registration(caplog):
    db = SQLAlchemy()

    class A(db.Model):  # type: ignore[name-defined]
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))
        b_id = sa.Column(sa.ForeignKey("b.id"))
        b = db.relationship(lambda: B)

    class B(db.Model):  # type: ignore[name-defined]
        id = sa.Column(sa.Integer, primary_key=True)
        c_id = sa.Column(sa.ForeignKey("c.id"))
        c = db.relationship(lambda: C)

    class C(db.Model):  # type: ignore[name-defined]
        id = sa.Column(sa.Integer, primary_key=True)
        ok = sa.Column(sa.Boolean)

    with caplog.at_level(logging.WARNING, logger="flask_mailchimp_sync"):
        MailchimpSync(db=db).add_source(A, role="customer", email="email", marketing="b.c.ok")
        quiet = MailchimpSync(db=db)
        quiet.add_source(
            A, role="customer", email="email", marketing="b.c.ok", watch={C: lambda c: []}
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'b.c.ok'" in warnings[0] and "watch=" in warnings[0]


def test_watch_follows_a_model_two_relationships_away(households, emulator):
    app, db, mailchimp, Household, HouseholdSettings, Member = households
    account, (audience,) = emulator.add_account_with_audiences("Homes", "Everyone")
    with app.app_context():
        home = Household(settings=HouseholdSettings(newsletter=True))
        db.session.add_all([Member(email="kim@homes.io", household=home), home])
        db.session.commit()
        store = mailchimp.settings_store()
        store.save_account(account.api_key, account_id="acc", account_name="Homes")
        store.set_audience("customer", audience.id, name="Everyone", tag="Customer")
        db.session.commit()
        run = start_sync(mailchimp, enqueue=False, trigger="test")
        assert SyncRunner(mailchimp, run.id).execute().added == 1

        home = db.session.get(Household, home.id)
        home.settings.newsletter = False  # two relationships away from the contact
        db.session.commit()
        wait_for_jobs(app)
    assert emulator.state.member(audience.id, "kim@homes.io").visible_status == "archived"


def test_a_watch_that_fails_never_fails_the_hosts_commit(tmp_path, emulator, caplog):
    app, db, _mailchimp, Household, HouseholdSettings, Member = household_host(
        tmp_path, emulator.api_url, contacts_of=lambda settings: 1 / 0
    )
    try:
        with app.app_context(), caplog.at_level(logging.WARNING):
            home = Household(settings=HouseholdSettings(newsletter=True))
            db.session.add_all([home, Member(email="kim@homes.io", household=home)])
            db.session.commit()  # the host's own change is saved whatever the hook meets
            assert db.session.query(Member).count() == 1
        assert any("next Sync" in r.getMessage() for r in caplog.records)
    finally:
        stop_jobs(app)
        with app.app_context():
            db.drop_all()
            db.engine.dispose()
