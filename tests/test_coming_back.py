"""Members coming back in Mailchimp: re-subscribed on a form, or un-archived by staff.

Between Syncs the shop reads only members who left (unsubscribed, bounced, archived),
so what it knows of a member kept out can be old. A member about to be reported kept
out for a contact with the flag is read again first; one who came back is the shop's
to update, never to archive: they joined again on their own.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from flask import Response, request

from flask_mailchimp_sync.emails import subscriber_hash
from flask_mailchimp_sync.engine import pull
from flask_mailchimp_sync.testing import wait_for_jobs
from flask_mailchimp_sync.testing.emulator.state import now

from .helpers import add_customer, counts, items, sync, writes
from .hosts import settle
from .hosts import sync as sync_host

SUE = "  Sue@Mailbox.io "
BEN_HASH = subscriber_hash("ben@mailbox.shop")
DOWN_PEOPLE = ("ann@mailbox.shop", "ben@mailbox.shop", "cy@mailbox.shop")
ONE_MEMBER = re.compile(r"/lists/[^/]+/members/[0-9a-f]{32}$")


def long_ago(emulator, audience, email):
    """The member's last change is older than any Sync's window: no list shows it."""
    emulator.state.member(audience, email).last_changed = now() - timedelta(hours=1)


def member_state(host, audience):
    State = host.mailchimp.models.MemberState
    return host.db.session.query(State).filter_by(audience_id=audience).one()


@pytest.mark.parametrize("deliver", ["real time", "full sync"])
def test_a_person_who_signs_up_again_is_updated_and_never_archived(host_shop, emulator, deliver):
    """Sue unsubscribes (the shop's flag goes off), signs up again on a Mailchimp form,
    and staff tick her box again: once she is handled she is no longer reported
    unsubscribed, and when the box goes off again the shop leaves her subscribed (she
    joined on her own). Ticked again, her data is what was sent before: real time
    handles the changed contact, a Sync only with --full."""
    host, audience = host_shop
    sue = host.add_supplier(SUE)
    assert sync_host(host).added == 1
    emulator.state.set_status(audience, "sue@mailbox.io", "unsubscribed")
    assert sync_host(host).state == "done"
    assert host.flag(sue) is False  # two-way: the unsubscribe came back to the shop

    emulator.state.set_status(audience, "sue@mailbox.io", "subscribed")  # a form
    host.mailchimp.settings_store().get().realtime = deliver == "real time"
    host.db.session.commit()
    before = len(emulator.state.requests)
    host.set_flag(sue, True)
    handle(host, deliver)
    state = member_state(host, audience)
    assert (state.status, state.sent) == ("subscribed", False)
    assert host.mailchimp.member_status(sue).label == "Subscribed"
    assert host.flag(sue) is True

    host.set_flag(sue, False)
    handle(host, deliver)
    assert emulator.state.member(audience, "sue@mailbox.io").visible_status == "subscribed"
    sent = writes(emulator, before)
    assert [w for w in sent if w["method"] == "DELETE" or "status" in (w["body"] or {})] == []


def handle(host, deliver: str) -> None:
    if deliver == "full sync":
        assert sync_host(host, full=True).state == "done"
    else:
        settle(host, deliver)


@pytest.mark.parametrize("deliver", ["sync", "real time"])
def test_a_person_still_unsubscribed_stays_blocked_and_keeps_the_ticked_box(
    host_shop, emulator, deliver
):
    """Read again, Sue is still unsubscribed: reported blocked, nothing sent, and the
    box staff ticked again is left as it is (her unsubscribe is not news)."""
    host, audience = host_shop
    sue = host.add_supplier(SUE)
    assert sync_host(host).added == 1
    emulator.state.set_status(audience, "sue@mailbox.io", "unsubscribed")
    assert sync_host(host).state == "done"
    long_ago(emulator, audience, "sue@mailbox.io")
    host.mailchimp.settings_store().get().realtime = deliver == "real time"
    host.db.session.commit()
    before = len(emulator.state.requests)
    host.set_flag(sue, True)
    settle(host, deliver)
    assert writes(emulator, before) == []
    assert emulator.state.member(audience, "sue@mailbox.io").visible_status == "unsubscribed"
    assert member_state(host, audience).status == "unsubscribed"
    assert host.flag(sue) is True


def test_a_member_staff_un_archive_gets_the_shops_changes(db, emulator, shared):
    """Someone archived Ben in Mailchimp, then un-archived him: his new name arrives."""
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    emulator.state.member(shared, "ben@mailbox.shop").archived = True
    assert sync().state == "done"  # the pull notes him archived, by someone else
    ben.first_name = "Benjamin"
    db.session.commit()
    run = sync()
    assert counts(run) == {"blocked": 1}
    assert items(run)["ben@mailbox.shop"] == ("blocked", "archived in Mailchimp")

    emulator.state.member(shared, "ben@mailbox.shop").archived = False  # staff, by hand
    ben.last_name = "Barker"
    db.session.commit()
    assert counts(sync()) == {"updated": 1}
    member = emulator.state.member(shared, "ben@mailbox.shop")
    assert (member.visible_status, member.merge_fields["FNAME"]) == ("subscribed", "Benjamin")
    assert member.merge_fields["LNAME"] == "Barker"


def test_a_preview_reads_nobody_again_and_the_sync_applies_the_news(db, emulator, shared):
    """Ben, archived by someone else, was un-archived and has unsubscribed meanwhile. A
    Preview decides from what is known; the Sync reads him again, reports him
    unsubscribed and turns his flag off (consent follows Mailchimp's news)."""
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    emulator.state.member(shared, "ben@mailbox.shop").archived = True
    assert sync().state == "done"
    member = emulator.state.member(shared, "ben@mailbox.shop")
    member.archived, member.status = False, "unsubscribed"
    long_ago(emulator, shared, "ben@mailbox.shop")
    ben.first_name = "Benjamin"
    db.session.commit()
    reads = len(emulator.state.requests)
    preview = sync(dry_run=True)
    assert items(preview)["ben@mailbox.shop"] == ("blocked", "archived in Mailchimp")
    assert not [r for r in emulator.state.requests[reads:] if "/members/" in r["path"]]
    assert ben.preferences.accepts_marketing is True
    run = sync()
    assert items(run)["ben@mailbox.shop"] == ("blocked", "unsubscribed in Mailchimp")
    db.session.refresh(ben.preferences)
    assert ben.preferences.accepts_marketing is False


def test_a_run_reads_at_most_so_many_members_again(db, emulator, shared, monkeypatch):
    monkeypatch.setattr(pull, "READ_AGAIN_AT_MOST", 1)
    people = [add_customer(db, "Ann", "Archer", "ann@mailbox.shop"),
              add_customer(db, "Ben", "Baker", "ben@mailbox.shop")]  # fmt: skip
    assert counts(sync()) == {"added": 2}
    for person in people:
        emulator.state.member(shared, person.email).archived = True
    assert sync().state == "done"
    for person in people:
        emulator.state.member(shared, person.email).archived = False
        person.first_name = person.first_name + "ie"
    db.session.commit()
    reads = len(emulator.state.requests)
    assert counts(sync()) == {"updated": 1, "blocked": 1}
    single = [r for r in emulator.state.requests[reads:] if "/members/" in r["path"]]
    assert [r["method"] for r in single] == ["GET", "PUT"]


@pytest.mark.parametrize(
    "reply",
    [
        Response('{"title": "Bad Request", "status": 400}', 400, mimetype="application/json"),
        Response('{"id": "x", "status": "subscribed"}', 200, mimetype="application/json"),
        Response(
            '{"email_address": "ann@mailbox.shop", "status": "subscribed"}',
            200,
            mimetype="application/json",
        ),
    ],
    ids=["refused", "no-address", "another-address"],
)
@pytest.mark.parametrize("deliver", ["sync", "real time"])
def test_an_odd_reply_to_reading_a_member_again_stops_nothing(
    app, db, emulator, shared, reply, deliver
):
    """The member cannot be read again, or the reply is not his: the Sync goes on and
    reports him as before, and what is known of him stays as it was."""

    @emulator.wsgi_app.before_request
    def odd_reply():
        if request.method == "GET" and request.path.endswith(f"/members/{BEN_HASH}"):
            return reply
        return None

    from example_app import mailchimp

    models = mailchimp.models

    def run_items(**where):
        return db.session.query(models.SyncRunItem).filter_by(**where).all()

    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    add_customer(db, "Ann", "Archer", "ann@mailbox.shop")
    assert counts(sync()) == {"added": 2}
    emulator.state.member(shared, "ben@mailbox.shop").archived = True
    assert sync().state == "done"
    emulator.state.member(shared, "ben@mailbox.shop").archived = False
    mailchimp.settings_store().get().realtime = deliver == "real time"
    ben.first_name = "Benjamin"
    db.session.commit()
    if deliver == "sync":
        run = sync()
        assert (run.state, counts(run)) == ("done", {"blocked": 1, "unchanged": 1})
        listed = items(run)
    else:
        wait_for_jobs(app)
        run = db.session.query(models.Delivery).one()
        assert (run.state, counts(run)) == ("done", {"blocked": 1})
        listed = {i.email: (i.outcome, i.reason) for i in run_items(delivery_id=run.id)}
    assert listed["ben@mailbox.shop"] == ("blocked", "archived in Mailchimp")
    assert emulator.state.member(shared, "ben@mailbox.shop").merge_fields["FNAME"] == "Ben"


@pytest.mark.parametrize("deliver", ["sync", "real time"])
def test_reading_members_again_stops_when_mailchimp_is_down(app, db, emulator, shared, deliver):
    """Three members someone archived in Mailchimp are read again before they are
    reported; Mailchimp goes down at the first read. The run or delivery stops there,
    as it does at any other request Mailchimp does not answer: it does not try every
    kept-out member (up to 100) with all its retries, each a minute or more against a
    Mailchimp that hangs, while its lock expires."""
    from example_app import mailchimp

    armed, down = threading.Event(), threading.Event()
    member_reads: list[str] = []

    @emulator.wsgi_app.before_request  # (set up before the emulator's first request)
    def mailchimp_goes_down():
        read = armed.is_set() and request.method == "GET" and ONE_MEMBER.search(request.path)
        if read:
            member_reads.append(request.path)
            down.set()
        return Response(status=503) if down.is_set() else None

    app.config["MAILCHIMP_SYNC_MAX_RETRIES"] = 2
    people = [add_customer(db, "Ann", "Archer", email) for email in DOWN_PEOPLE]
    assert counts(sync()) == {"added": 3}
    for email in DOWN_PEOPLE:
        emulator.state.member(shared, email).archived = True
    assert sync().state == "done"  # the pull notes them archived, by someone else

    mailchimp.settings_store().get().realtime = deliver == "real time"
    for person in people:
        person.first_name = "Anne"
    armed.set()
    db.session.commit()
    if deliver == "sync":
        run = sync()
    else:
        wait_for_jobs(app)
        run = db.session.query(mailchimp.models.Delivery).one()
    assert len(member_reads) == 3, member_reads  # one member, its two retries: then stop
    assert run.state == "failed"  # Mailchimp is unavailable: nothing was decided


def test_a_member_the_shop_archived_who_then_unsubscribes_is_never_restored(db, emulator, shared):
    """The shop archived Ben (his box went off); staff un-archived him and he then
    unsubscribed; someone archived him again. Ticked again, he is reported blocked: the
    shop's archive is long gone, and bringing him back (even as pending, with double
    opt-in) would ask someone who unsubscribed to subscribe again."""
    from example_app import mailchimp

    mailchimp.settings_store().get().double_opt_in = True
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    emulator.state.set_status(shared, "ben@mailbox.shop", "subscribed")  # confirmed
    ben.preferences.accepts_marketing = False
    db.session.commit()
    assert counts(sync()) == {"archived": 1}
    member = emulator.state.member(shared, "ben@mailbox.shop")
    member.archived = False  # staff, by hand
    emulator.state.set_status(shared, "ben@mailbox.shop", "unsubscribed")
    assert sync().state == "done"  # the pull notes the unsubscribe
    member.archived, member.last_changed = True, now()  # someone archives him again
    assert sync().state == "done"  # and the pull notes that
    before = len(emulator.state.requests)
    ben.preferences.accepts_marketing = True
    db.session.commit()
    run = sync()
    assert items(run)["ben@mailbox.shop"] == ("blocked", "archived in Mailchimp")
    assert writes(emulator, before) == []
    assert emulator.state.member(shared, "ben@mailbox.shop").status == "unsubscribed"
