"""The daily Sync: on RQ's scheduler where Redis is configured, else a cron line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from markupsafe import escape

from flask_mailchimp_sync.daily import cron_line, next_daily

from .helpers import connect_shop, csrf_token

PAGE = "/preferences/integrations/mailchimp/"


@pytest.fixture
def shop(app, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"consignor": mailchimp_account.consignors.id})
    return mailchimp_account


@pytest.fixture
def fake_redis(app, monkeypatch):
    fakeredis = pytest.importorskip("fakeredis")
    import redis

    server = fakeredis.FakeRedis()
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: server))
    app.config["MAILCHIMP_SYNC_REDIS_URL"] = "redis://fake"
    return server


def scheduled(app, server):
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    registry = ScheduledJobRegistry(
        queue=Queue(app.config["MAILCHIMP_SYNC_QUEUE"], connection=server)
    )
    return {job_id: registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()}


def save_daily(client, hour, audience):
    """The one settings form, saved with the daily Sync at *hour* ("" for off)."""
    token = csrf_token(client.get(PAGE).get_data(as_text=True))
    form = {"role0_audience": audience, "role1_audience": "", "role0_tag": "Consignor",
            "role1_tag": "Customer", "realtime": "y", "daily_hour": hour}  # fmt: skip
    return client.post(f"{PAGE}audiences", data={"csrf_token": token, **form})


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 5, 1, 5, 59, tzinfo=UTC), datetime(2026, 5, 1, 6, tzinfo=UTC)),
        (datetime(2026, 5, 1, 6, 0, tzinfo=UTC), datetime(2026, 5, 2, 6, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), datetime(2027, 1, 1, 6, tzinfo=UTC)),
    ],
)
def test_the_next_daily_sync_is_the_next_such_hour(now, expected):
    assert next_daily(6, now) == expected


def test_without_redis_the_page_gives_the_cron_line(app, staff_client, shop):
    assert "Sync every day" in staff_client.get(PAGE).get_data(as_text=True)
    refused = staff_client.post(f"{PAGE}audiences", data={"daily_hour": "6"})
    assert refused.status_code == 400  # no CSRF token
    response = save_daily(staff_client, "6", shop.consignors.id)
    assert response.status_code == 302
    html = staff_client.get(PAGE).get_data(as_text=True)
    assert str(escape(cron_line(6))) in html
    assert '<option selected value="6">' in html or 'value="6" selected' in html
    with app.app_context():
        from example_app import mailchimp

        assert mailchimp.settings_store().get().daily_sync_hour == 6


def test_with_rq_the_daily_sync_is_scheduled_runs_and_schedules_the_next(
    app, staff_client, emulator, shop, fake_redis
):
    assert save_daily(staff_client, "6", shop.consignors.id).status_code == 302
    html = staff_client.get(PAGE).get_data(as_text=True)
    assert "A Sync runs every day at 06:00 UTC." in html and str(escape(cron_line(6))) not in html
    (when,) = scheduled(app, fake_redis).values()
    assert when.replace(tzinfo=UTC) == next_daily(6)
    save_daily(staff_client, "6", shop.consignors.id)  # saving again replaces, never doubles
    assert len(scheduled(app, fake_redis)) == 1

    with app.app_context():
        from example_app import mailchimp
        from flask_mailchimp_sync.daily import run_daily_sync_job

        from .helpers import add_consignor

        add_consignor(mailchimp.db, "Ada Abbott", "ada@mailbox.shop")
        run_daily_sync_job()
        SyncRun = mailchimp.models.SyncRun
        run = mailchimp.db.session.query(SyncRun).filter_by(trigger="daily").one()
        assert run.state == "done" and run.added == 1
    assert emulator.state.member(shop.consignors.id, "ada@mailbox.shop").status == "subscribed"
    assert len(scheduled(app, fake_redis)) == 1

    assert save_daily(staff_client, "", shop.consignors.id).status_code == 302
    assert scheduled(app, fake_redis) == {}
