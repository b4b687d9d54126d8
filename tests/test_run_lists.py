"""How long a run's list of contacts is kept: the newest runs keep theirs, older runs
keep their counts, and their page says the list is gone."""

from __future__ import annotations

import pytest

from flask_mailchimp_sync.models import utcnow

from .helpers import PAGE, add_customer, connect_shop, counts, items, sync, text


@pytest.fixture
def shop(app, mailchimp_account):
    """The example shop with one contact every Sync skips (its address is malformed)."""
    from example_app.models import db

    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
        add_customer(db, "Ann", "Archer", "ann@mailbox.io")
        add_customer(db, "Bad", "Address", "bad-address.example")
    return app


def syncs(app, number: int, **options) -> list[int]:
    with app.app_context():
        return [sync(**options).id for _ in range(number)]


def listed(app, run_id: int) -> dict:
    from example_app import mailchimp

    with app.app_context():
        return items(mailchimp.db.session.get(mailchimp.models.SyncRun, run_id))


def test_only_the_newest_runs_keep_their_lists(shop, staff_client):
    shop.config["MAILCHIMP_SYNC_RUN_LISTS_KEPT"] = 2
    first, second, third = syncs(shop, 3)
    assert listed(shop, first) == {}
    for kept in (second, third):
        assert [outcome for outcome, _ in listed(shop, kept).values()] == ["skipped"]
        page = text(staff_client.get(f"{PAGE}runs/{kept}").text)
        assert "bad-address.example" in page and "no longer kept" not in page
    page = text(staff_client.get(f"{PAGE}runs/{first}").text)
    assert "This list is no longer kept: only the newest 2 runs keep theirs." in page
    assert "bad-address.example" not in page
    from example_app import mailchimp

    with shop.app_context():  # the old run keeps its counts
        run = mailchimp.db.session.get(mailchimp.models.SyncRun, first)
        assert counts(run) == {"added": 1, "skipped": 1}


def test_previews_count_as_runs(shop):
    shop.config["MAILCHIMP_SYNC_RUN_LISTS_KEPT"] = 1
    (synced,) = syncs(shop, 1)
    (previewed,) = syncs(shop, 1, dry_run=True)
    assert listed(shop, synced) == {}
    assert list(listed(shop, previewed)) == ["bad-address.example"]


def test_none_keeps_every_list(shop):
    shop.config["MAILCHIMP_SYNC_RUN_LISTS_KEPT"] = None
    runs = syncs(shop, 3)
    assert all(list(listed(shop, run)) == ["bad-address.example"] for run in runs)


def test_a_run_still_going_keeps_its_list(shop):
    """Runs go side by side (two audiences, or a Preview beside a Sync): the older one,
    still going, keeps the contacts it listed so far when the newer one finishes."""
    from example_app import mailchimp

    shop.config["MAILCHIMP_SYNC_RUN_LISTS_KEPT"] = 1
    Run, Item = mailchimp.models.SyncRun, mailchimp.models.SyncRunItem
    with shop.app_context():
        going = Run(state="running", dry_run=True, started_at=utcnow(), trigger="test")
        mailchimp.db.session.add(going)
        mailchimp.db.session.flush()
        mailchimp.db.session.add(
            Item(run_id=going.id, outcome="skipped", email="cy@mailbox.io", reason="no name")
        )
        mailchimp.db.session.commit()
        going_id = going.id
    syncs(shop, 2)
    assert list(listed(shop, going_id)) == ["cy@mailbox.io"]
