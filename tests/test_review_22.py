"""Review of reading kept-out members again, and of members coming back.

Each test arranges one situation the review found and checks what a shop relies on:
what Mailchimp holds, what the run did, how long it went on against a Mailchimp that
is down.
"""

from __future__ import annotations

import re
import threading

import pytest
from flask import Response, request

from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import add_customer, counts, sync

PEOPLE = ("ann@mailbox.shop", "ben@mailbox.shop", "cy@mailbox.shop")
ONE_MEMBER = re.compile(r"/lists/[^/]+/members/[0-9a-f]{32}$")


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
    people = [add_customer(db, "Ann", "Archer", email) for email in PEOPLE]
    assert counts(sync()) == {"added": 3}
    for email in PEOPLE:
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
