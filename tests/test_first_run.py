"""A host's first steps with the extension: each mistake gets one message naming the fix."""

from __future__ import annotations

import sqlalchemy as sa

from flask_mailchimp_sync.jobs import redis_url

from .helpers import make_host

PAGE = "/preferences/integrations/mailchimp/"
FIX = "`flask db upgrade`; without migrations, call `db.create_all()` in an app context."


def registered(tmp_path):
    app, db, mailchimp = make_host(tmp_path)
    app.config["TESTING"] = True
    mailchimp.authorize(lambda: True)
    mailchimp.init_app(app)
    return app, db, mailchimp


def test_the_page_before_the_tables_exist_says_how_to_create_them(tmp_path):
    app, db, _mailchimp = registered(tmp_path)
    response = app.test_client().get(PAGE)
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "The Mailchimp sync tables are not in the database yet" in page
    assert "mailchimp_sync_settings" in page and FIX.replace("`", "") in page.replace("`", "")
    with app.app_context():
        db.create_all()
    assert app.test_client().get(PAGE).status_code == 200


def test_the_cli_before_the_tables_exist_says_how_to_create_them(tmp_path):
    app, _db, _mailchimp = registered(tmp_path)
    for command in (["status"], ["sync"], ["drain"], ["connect", "--api-key", "a" * 32 + "-us6"]):
        result = app.test_cli_runner().invoke(args=["mailchimp", *command])
        assert result.exit_code == 1, command
        assert result.output.startswith("Error: The Mailchimp sync tables are not in the database")
        assert FIX in result.output and "Traceback" not in result.output


def test_tables_missing_a_new_column_say_to_migrate(tmp_path):
    app, db, _mailchimp = registered(tmp_path)
    with app.app_context():
        db.create_all()
        with db.engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE mailchimp_sync_runs DROP COLUMN phase"))
    result = app.test_cli_runner().invoke(args=["mailchimp", "status"])
    assert result.exit_code == 1
    assert (
        "The Mailchimp sync tables are older than this version of the extension (missing "
        "columns: mailchimp_sync_runs.phase)." in result.output
    )
    assert "flask db upgrade" in result.output


def test_a_path_leading_nowhere_is_named_by_the_cli_and_the_page(tmp_path):
    app, db, mailchimp = make_host(tmp_path)
    app.config["TESTING"] = True
    model = mailchimp.sources[0].model
    mailchimp.add_source(model, role="consignor", email="email", marketing="prefs.opted_in")
    mailchimp.authorize(lambda: True)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["mailchimp", "status"])
    assert result.exit_code == 1
    assert "Customer has no attribute 'prefs' (the contact's marketing is read from " \
        "'prefs.opted_in')." in result.output  # fmt: skip


def test_redis_url_false_runs_jobs_in_process_whatever_redis_url_says():
    assert redis_url({"REDIS_URL": "redis://cache:6379/0"}) == "redis://cache:6379/0"
    assert (
        redis_url({"REDIS_URL": "redis://cache:6379/0", "MAILCHIMP_SYNC_REDIS_URL": False}) is None
    )
    assert redis_url({"MAILCHIMP_SYNC_REDIS_URL": "redis://q/1", "REDIS_URL": "redis://c/0"}) == (
        "redis://q/1"
    )


def test_the_worker_command_says_false_means_in_process(tmp_path):
    app, db, _mailchimp = registered(tmp_path)
    app.config.update(REDIS_URL="redis://127.0.0.1:1/0", MAILCHIMP_SYNC_REDIS_URL=False)
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["mailchimp", "worker"])
    assert result.exit_code == 1 and "no worker is needed" in result.output
