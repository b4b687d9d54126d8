from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import DEFAULT_CONFIG, MailchimpSync, get_extension

from .helpers import make_host


def test_init_app_sets_every_default_and_keeps_the_hosts_values(tmp_path):
    app, _db, mailchimp = make_host(tmp_path)
    app.config["MAILCHIMP_SYNC_TIMEOUT"] = 5.0
    mailchimp.init_app(app)
    assert app.config["MAILCHIMP_SYNC_TIMEOUT"] == 5.0
    for key, default in DEFAULT_CONFIG.items():
        assert key.startswith("MAILCHIMP_SYNC_")
        if key != "MAILCHIMP_SYNC_TIMEOUT":
            assert app.config[key] == default
    assert app.extensions["mailchimp_sync"].extension is mailchimp
    assert "mailchimp" in app.cli.commands


def test_registering_twice_on_one_app_is_refused(tmp_path):
    app, _db, mailchimp = make_host(tmp_path)
    mailchimp.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        mailchimp.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        MailchimpSync(app, db=_db)


def test_use_without_init_app_says_what_to_call(tmp_path):
    app, _db, mailchimp = make_host(tmp_path)
    with app.app_context(), pytest.raises(RuntimeError, match=r"init_app\(app\)"):
        mailchimp.settings_store()
    with app.app_context(), pytest.raises(RuntimeError, match="not registered"):
        get_extension()


def test_db_must_be_flask_sqlalchemy():
    with pytest.raises(TypeError, match="SQLAlchemy"):
        MailchimpSync(db=object())  # type: ignore[arg-type]


def test_two_apps_in_one_process_keep_their_own_config_and_data(tmp_path):
    app_a, db_a, sync_a = make_host(tmp_path, "shop_a")
    app_b, db_b, sync_b = make_host(tmp_path, "shop_b")
    app_a.config["MAILCHIMP_SYNC_API_URL"] = "http://127.0.0.1:1/3.0/"
    sync_a.init_app(app_a)
    sync_b.init_app(app_b)
    assert app_b.config["MAILCHIMP_SYNC_API_URL"] is None

    for app, db, name in ((app_a, db_a, "A"), (app_b, db_b, "B")):
        with app.app_context():
            db.create_all()
            store = get_extension().settings_store()
            store.save_account("0" * 32 + "-us6", account_id=name, account_name=f"Shop {name}")
            db.session.commit()
    with app_a.app_context():
        assert get_extension() is sync_a
        assert sync_a.settings_store().get().account_name == "Shop A"
    with app_b.app_context():
        assert sync_b.settings_store().get().account_name == "Shop B"


def test_one_extension_object_serves_several_apps_from_a_factory(tmp_path):
    app_a, db, mailchimp = make_host(tmp_path, "first")
    app_b = Flask("second")
    app_b.config.update(SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/second.db")
    db.init_app(app_b)
    for app in (app_a, app_b):
        mailchimp.init_app(app)
        with app.app_context():
            db.create_all()
            assert mailchimp.settings_store().get() is None


def test_tables_are_prefixed_and_created_with_the_hosts_metadata(tmp_path):
    app, db, mailchimp = make_host(tmp_path)
    mailchimp.init_app(app)
    plugin_tables = {t for t in db.metadata.tables if t.startswith("mailchimp_sync_")}
    assert plugin_tables == {
        "mailchimp_sync_settings",
        "mailchimp_sync_audiences",
        "mailchimp_sync_members",
        "mailchimp_sync_contacts",
        "mailchimp_sync_staged",
        "mailchimp_sync_locks",
        "mailchimp_sync_outbox",
        "mailchimp_sync_runs",
        "mailchimp_sync_run_items",
        "mailchimp_sync_deliveries",
    }
    with app.app_context():
        db.create_all()
        assert plugin_tables <= set(sa.inspect(db.engine).get_table_names())


def test_plugin_writes_share_the_hosts_transaction(tmp_path):
    app, db, mailchimp = make_host(tmp_path)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
        mailchimp.settings_store().save_account("a" * 32 + "-us6", account_id="1", account_name="X")
        db.session.rollback()
        assert mailchimp.settings_store().get() is None
        mailchimp.settings_store().save_account("a" * 32 + "-us6", account_id="1", account_name="X")
        db.session.commit()
        db.session.remove()
        assert mailchimp.settings_store().get().account_name == "X"


def test_models_are_defined_once_per_db():
    db = SQLAlchemy()
    assert MailchimpSync(db=db).models is MailchimpSync(db=db).models


def test_plugin_model_names_do_not_clash_with_a_hosts_settings_model(tmp_path):
    db = SQLAlchemy()

    class Settings(db.Model):  # a host model with the most likely clashing name
        id = sa.Column(sa.Integer, primary_key=True)
        owner = db.relationship("Owner", back_populates="settings")
        owner_id = sa.Column(sa.ForeignKey("owner.id"))

    class Owner(db.Model):
        id = sa.Column(sa.Integer, primary_key=True)
        settings = db.relationship("Settings", back_populates="owner")

    MailchimpSync(db=db)
    app = Flask("clash")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/clash.db"
    db.init_app(app)
    with app.app_context():
        db.create_all()
        db.session.add(Owner(settings=[Settings()]))
        db.session.commit()
        assert db.session.query(Settings).count() == 1
