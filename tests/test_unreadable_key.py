"""A stored key the app can no longer decrypt (its SECRET_KEY changed) is a state the page
and the CLI explain: Connect is offered, Disconnect works, and no run is left stuck."""

from __future__ import annotations

import pytest

from flask_mailchimp_sync.crypto import encrypt_api_key
from flask_mailchimp_sync.jobs import run_sync_job, start_sync
from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import connect_shop, csrf_token

PAGE = "/preferences/integrations/mailchimp/"
UNREADABLE = "The stored Mailchimp API key cannot be decrypted"


def lose_the_key(app):
    """What a changed SECRET_KEY does: the stored token was made with another secret."""
    from example_app import mailchimp

    with app.app_context():
        settings = mailchimp.settings_store().get()
        key = mailchimp.settings_store().api_key()
        settings.api_key_encrypted = encrypt_api_key({"SECRET_KEY": "the old secret"}, key)
        mailchimp.db.session.commit()


def connect_customers(app, account):
    from example_app import mailchimp
    from flask_mailchimp_sync.connection import AudienceChoice, connect

    with app.app_context():
        connect(mailchimp, account.api_key, {"customer": AudienceChoice(account.customers.id)})
        mailchimp.db.session.commit()


@pytest.fixture
def unreadable(app, mailchimp_account):
    """Connected to the customer audience, then the secret changed."""
    connect_customers(app, mailchimp_account)
    lose_the_key(app)
    return mailchimp_account


def runs(app):
    from example_app import mailchimp

    with app.app_context():
        SyncRun = mailchimp.models.SyncRun
        return [
            (r.state, r.error) for r in mailchimp.db.session.query(SyncRun).order_by(SyncRun.id)
        ]


def connected(app):
    from example_app import mailchimp

    with app.app_context():
        settings = mailchimp.settings_store().get()
        return settings.is_connected


def post(client, action, **data):
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    return client.post(PAGE + action, data={"csrf_token": token, **data}, follow_redirects=True)


def test_the_page_explains_and_offers_connect_and_disconnect(staff_client, unreadable):
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert UNREADABLE in page and "connect the Mailchimp account again" in page
    assert 'name="api_key"' in page  # the Connect form
    assert 'href="/preferences/integrations/mailchimp/disconnect"' in page
    assert 'name="sync"' not in page  # nothing that needs the key


def test_connecting_again_replaces_the_unreadable_key(app, staff_client, unreadable):
    response = post(staff_client, "connect", api_key=unreadable.api_key)
    assert "Connected to the Mailchimp account" in response.get_data(as_text=True)
    page = staff_client.get(PAGE).get_data(as_text=True)
    assert UNREADABLE not in page and 'name="api_key"' not in page
    assert f'<option selected value="{unreadable.customers.id}">' in page  # the same account: kept


def test_disconnect_works_on_the_page(app, staff_client, unreadable):
    response = post(staff_client, "disconnect", confirm="y")
    assert response.status_code == 200
    assert "Disconnected from Mailchimp" in response.get_data(as_text=True)
    assert connected(app) is False


def test_disconnect_works_from_the_cli(app, runner, unreadable):
    result = runner.invoke(args=["mailchimp", "disconnect"])
    assert result.exit_code == 0, result.output
    assert "Disconnected" in result.output and connected(app) is False


def test_disconnect_says_the_webhook_is_left_in_mailchimp(app, staff_client, emulator, hooked):
    lose_the_key(app)
    response = post(staff_client, "disconnect", confirm="y")
    assert "delete it in Mailchimp" in response.get_data(as_text=True)
    assert connected(app) is False


def test_cli_status_explains(runner, unreadable):
    result = runner.invoke(args=["mailchimp", "status"])
    assert result.exit_code == 0, result.output
    assert UNREADABLE in result.output and "flask mailchimp connect" in result.output


def test_sync_is_refused_with_the_reason_and_leaves_no_run(app, staff_client, runner, unreadable):
    response = post(staff_client, "sync", sync="Sync")
    assert UNREADABLE in response.get_data(as_text=True)
    result = runner.invoke(args=["mailchimp", "sync"])
    assert result.exit_code != 0 and UNREADABLE in result.output
    wait_for_jobs(app)
    assert runs(app) == []


def test_a_run_queued_before_the_secret_changed_ends_failed_not_queued(
    app, staff_client, mailchimp_account
):
    from example_app import mailchimp

    connect_customers(app, mailchimp_account)
    with app.app_context():
        run_id = start_sync(mailchimp, enqueue=False).id
    lose_the_key(app)
    with app.app_context():
        run_sync_job(run_id)
    ((state, error),) = runs(app)
    assert state == "failed" and UNREADABLE in error
    response = post(staff_client, "connect", api_key=mailchimp_account.api_key)
    assert response.status_code == 200
    response = post(staff_client, "sync", sync="Sync")  # not "already queued or running"
    wait_for_jobs(app)
    assert [state for state, _error in runs(app)] == ["failed", "done"]


def test_any_error_before_a_run_starts_marks_it_failed(app, mailchimp_account, monkeypatch):
    from example_app import mailchimp
    from flask_mailchimp_sync import jobs

    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
        run_id = start_sync(mailchimp, enqueue=False).id

    def broken(*args, **kwargs):
        raise RuntimeError("a bug before the run's own error handling")

    monkeypatch.setattr(jobs, "SyncRunner", broken)
    with app.app_context(), pytest.raises(RuntimeError):
        run_sync_job(run_id)
    ((state, error),) = runs(app)
    assert state == "failed" and "the log has the details" in error
