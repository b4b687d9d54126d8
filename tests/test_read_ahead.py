"""A Sync made faster: links read ahead on a second connection, the collector skipping
the app during a run, departed members looked for only when some may be. Otherwise the
same."""

from __future__ import annotations

import gc
import time

import pytest
import sqlalchemy as sa

from .helpers import add_customer, connect_shop, counts, sync


def test_a_pool_with_no_connection_to_spare_reads_the_links_in_line(
    app, emulator, mailchimp_account
):
    """The links' second connection comes from the host's pool after the run's own:
    with a pool of one, the run waits a second for it, then reads in line."""
    from example_app.models import db

    with app.app_context():
        engine = sa.create_engine(db.engine.url, pool_size=1, max_overflow=0, pool_timeout=30)
        db.session.remove()
        db.session.configure(bind=engine)
        try:
            connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
            for n in range(12):
                add_customer(db, "Ann", f"Lee{n}", f"ann{n}@mailbox.shop")
            started = time.monotonic()
            assert counts(sync()) == {"added": 12}
            assert counts(sync()) == {"unchanged": 12}
            assert time.monotonic() - started < 20  # not the pool's 30 s timeout
        finally:
            db.session.remove()
            db.session.configure(bind=None)
            engine.dispose()


def test_a_member_whose_last_contact_is_deleted_during_the_run_is_archived(
    db, emulator, mailchimp_account, monkeypatch
):
    """A Sync counts departed members before it sends, and skips looking for them when
    there were none. A contact deleted after that count by plain SQL (no session hook
    sees it), read again because its address is handled (another contact left it),
    leaves its member with nobody: the same run archives it all the same."""
    from example_app.models import Customer, CustomerPreferences
    from flask_mailchimp_sync.engine.select import RunSelection

    audience = mailchimp_account.customers.id
    connect_shop(mailchimp_account.api_key, {"customer": audience})
    stays = add_customer(db, "Ann", "Lee", "x@mailbox.shop")
    moves = add_customer(db, "Ann", "Lee", "x@mailbox.shop")
    add_customer(db, "Ben", "Ray", "y@mailbox.shop")
    assert counts(sync()) == {"added": 2}
    moves.email = "y@mailbox.shop"  # onto a member Mailchimp has: it cannot move there
    db.session.commit()
    stays_id = stays.id
    real_count = RunSelection.departed_count

    def count_then_delete(self, audience_id):
        counted = real_count(self, audience_id)
        prefs = CustomerPreferences.customer_id == stays_id
        db.session.execute(sa.delete(CustomerPreferences).where(prefs))
        db.session.execute(sa.delete(Customer).where(Customer.id == stays_id))
        return counted

    monkeypatch.setattr(RunSelection, "departed_count", count_then_delete)
    run = sync()
    assert run.state == "done", run.error
    held = {email: m.visible_status for email, m in emulator.state.members(audience).items()}
    assert held == {"x@mailbox.shop": "archived", "y@mailbox.shop": "subscribed"}


def test_a_host_that_froze_objects_keeps_them_frozen(db, emulator, mailchimp_account):
    connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    add_customer(db, "Ann", "Lee", "ann@mailbox.shop")
    gc.freeze()  # as a host does before forking its workers
    try:
        frozen = gc.get_freeze_count()
        assert counts(sync()) == {"added": 1}
        assert gc.get_freeze_count() > frozen // 2  # still frozen (some have died since)
    finally:
        gc.unfreeze()


def test_the_collector_is_as_it_was_after_a_run(db, emulator, mailchimp_account):
    connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    add_customer(db, "Ann", "Lee", "ann@mailbox.shop")
    before = gc.get_threshold()
    seen = []
    from flask_mailchimp_sync import signals

    def during(sender, run):
        seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))

    signals.sync_started.connect(during)
    try:
        assert counts(sync()) == {"added": 1}
    finally:
        signals.sync_started.disconnect(during)
    assert seen == [(before[0], True)]  # the app set aside, collections as often
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_session_bound_to_a_connection_syncs_and_resyncs(db, emulator, mailchimp_account):
    """The pattern of a host's test suite: everything inside one outer transaction,
    rolled back at the end. Links are then read in line, in that transaction."""
    connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    engine = db.engine
    with engine.connect() as connection:
        outer = connection.begin()
        db.session.remove()
        bound = sa.orm.scoped_session(
            sa.orm.sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
        )
        real_session = db.session
        db.session = bound
        try:
            for n in range(12):
                add_customer(db, "Ann", f"Lee{n}", f"ann{n}@mailbox.shop")
            assert counts(sync()) == {"added": 12}
            requests = len(emulator.state.requests)
            again = sync()
            assert counts(again) == {"unchanged": 12}
            assert all(r["method"] == "GET" for r in emulator.state.requests[requests:])
        finally:
            bound.remove()
            db.session = real_session
            outer.rollback()


@pytest.mark.parametrize("page_size", [2, 10], ids=["several pages", "one page"])
def test_unsubscribes_read_while_the_shop_is_staged_all_arrive(
    db, emulator, mailchimp_account, monkeypatch, page_size
):
    """Mailchimp's changes since the last Sync are read side by side while the shop is
    staged, a first page of each status; a status with more pages is read again from
    its start, all at once, so no member is skipped."""
    from example_app.models import Customer
    from flask_mailchimp_sync.client import MailchimpApi
    from flask_mailchimp_sync.engine.staging import Snapshot

    audience = mailchimp_account.customers.id
    connect_shop(mailchimp_account.api_key, {"customer": audience})
    for n in range(7):
        add_customer(db, "Ann", f"Lee{n}", f"ann{n}@mailbox.shop")
    assert counts(sync()) == {"added": 7}
    for n in range(5):
        emulator.state.set_status(audience, f"ann{n}@mailbox.shop", "unsubscribed")
    emulator.state.set_status(audience, "ann5@mailbox.shop", "cleaned")
    real = MailchimpApi.member_page
    monkeypatch.setattr(
        MailchimpApi,
        "member_page",
        lambda self, *a, **k: real(self, *a, **{**k, "count": page_size}),
    )
    real_take = Snapshot.take

    def take(self):  # while the shop is staged, one of them resubscribes in Mailchimp
        deadline = time.monotonic() + 10
        while len(early_reads()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # once the first pages are read
        emulator.state.set_status(audience, "ann0@mailbox.shop", "subscribed")
        return real_take(self)

    before = len(emulator.state.requests)

    def early_reads():
        return [
            r for r in emulator.state.requests[before:]
            if r["method"] == "GET" and r["path"].endswith("/members")
        ]  # fmt: skip

    monkeypatch.setattr(Snapshot, "take", take)
    run = sync()
    assert run.state == "done", run.error
    flags = {c.email: c.preferences.accepts_marketing for c in db.session.query(Customer)}
    # Paging on from where the early page ended would skip one: the list moved up.
    assert {email: on for email, on in flags.items() if email != "ann0@mailbox.shop"} == {
        f"ann{n}@mailbox.shop": n == 6 for n in range(1, 7)
    }
