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


def test_a_companion_that_left_its_member_during_the_run_is_noticed(
    db, emulator, mailchimp_account
):
    """An unchanged contact read again mid-run (an address being handled needs all its
    contacts) that was deleted or moved meanwhile may leave its member departed: the
    run then looks for departed members though it counted none before sending."""
    from example_app import mailchimp
    from example_app.models import Customer
    from flask_mailchimp_sync.engine.runner import targets_for
    from flask_mailchimp_sync.engine.staging import Snapshot

    audience = mailchimp_account.customers.id
    connect_shop(mailchimp_account.api_key, {"customer": audience})
    stays = add_customer(db, "Ann", "Lee", "ann@mailbox.shop")
    goes = add_customer(db, "Ben", "Ray", "ben@mailbox.shop")
    moves = add_customer(db, "Cleo", "Day", "cleo@mailbox.shop")
    invalid = add_customer(db, "Dan", "Fox", "dan@mailbox.shop")
    assert counts(sync()) == {"added": 4}
    hashes = {"ann", "ben", "cleo", "dan"}
    from flask_mailchimp_sync.emails import subscriber_hash

    hashes = {subscriber_hash(f"{name}@mailbox.shop") for name in hashes}
    keys = {c.id: ("customer:customers", str(c.id)) for c in (stays, goes, moves, invalid)}

    def companions_moved(change):
        targets = targets_for(mailchimp, mailchimp.settings_store().get(), None)
        snapshot = Snapshot(db.session, mailchimp.models, 999, targets)
        change()
        snapshot.add_companions(list(keys.values()), hashes)
        db.session.rollback()
        return snapshot.companions_moved

    assert companions_moved(lambda: None) is False
    assert companions_moved(lambda: db.session.delete(db.session.get(Customer, goes.id)))
    assert companions_moved(lambda: setattr(db.session.get(Customer, moves.id), "email", "c@x.io"))
    assert companions_moved(lambda: setattr(db.session.get(Customer, invalid.id), "email", "no"))


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
