"""Reading ahead: Mailchimp's changes read while the shop is staged, links on a second
connection, and the garbage collector during a run. Faster, and otherwise the same."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import sqlalchemy as sa

from flask_mailchimp_sync.engine.read_ahead import Ahead

from .helpers import add_customer, connect_shop, counts, sync


def test_read_ahead_keeps_the_order_and_raises_an_error_where_it_came():
    def produce():
        yield from range(5)
        raise RuntimeError("Mailchimp went away")

    reading = Ahead(produce, size=2)
    assert [next(reading) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="went away"):
        next(reading)
    with pytest.raises(StopIteration):
        next(reading)


def test_read_ahead_stays_a_few_items_ahead_and_stops_when_closed():
    produced = []

    def produce():
        for n in range(1_000_000):
            produced.append(n)
            yield n

    reading = Ahead(produce, size=3)
    assert next(reading) == 0
    time.sleep(0.3)
    assert len(produced) <= 5  # one taken, three queued, one waiting to be queued
    reading.close()
    time.sleep(0.3)
    assert len(produced) <= 5
    assert not [t for t in threading.enumerate() if t.name == "mailchimp-read-ahead"]


def test_a_failed_read_of_mailchimp_ends_the_run_with_its_reason(
    db, emulator, mailchimp_account, monkeypatch
):
    """The members are read while the shop is staged: a read that fails there fails
    the run with Mailchimp's reason, after the staging, and sends nothing."""
    from flask_mailchimp_sync.client import MailchimpApi
    from flask_mailchimp_sync.exceptions import MailchimpUnreachableError

    audience = mailchimp_account.customers.id
    connect_shop(mailchimp_account.api_key, {"customer": audience})
    for n in range(30):
        add_customer(db, "Ann", f"Lee{n}", f"ann{n}@mailbox.shop")
    real = MailchimpApi.iter_members

    def unreachable(self, audience_id, **options):
        raise MailchimpUnreachableError("Mailchimp did not answer in time.")
        yield  # a generator, like the real one

    monkeypatch.setattr(MailchimpApi, "iter_members", unreachable)
    run = sync()
    assert (run.state, run.error) == ("failed", "Mailchimp did not answer in time.")
    assert emulator.state.members(audience) == {}
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "mailchimp-read-ahead"]
    monkeypatch.setattr(MailchimpApi, "iter_members", real)
    assert counts(sync()) == {"added": 30}  # and the next run does it all


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
