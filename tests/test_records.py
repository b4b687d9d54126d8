"""Member states recorded in bulk: only what a page changed is written."""

from __future__ import annotations

import sqlalchemy as sa

from flask_mailchimp_sync import emails
from flask_mailchimp_sync.engine import ledger, records

AUDIENCE = "a1b2c3d4e5"


def state_model():
    from example_app import mailchimp

    return mailchimp.models.MemberState


def row(db, email):
    State = state_model()
    return db.session.execute(
        sa.select(State).where(State.subscriber_hash == emails.subscriber_hash(email))
    ).scalar_one()


def test_a_change_made_meanwhile_to_another_column_stands(db):
    State = state_model()
    ledger.member_state(db.session, State, AUDIENCE, emails.subscriber_hash("a@x.shop"), "a@x.shop")
    db.session.commit()
    page = records.read(
        db.session, State, AUDIENCE, {emails.subscriber_hash("a@x.shop"): "a@x.shop"}
    )
    # Meanwhile a webhook says the member unsubscribed.
    db.session.execute(sa.update(State).values(status="unsubscribed"))
    for record in page.values():
        record.fingerprint, record.sent = "f1", True
    records.write(db.session, State, page.values())
    db.session.commit()
    stored = row(db, "a@x.shop")
    assert (stored.status, stored.fingerprint, stored.sent) == ("unsubscribed", "f1", True)


def test_a_member_added_meanwhile_takes_just_what_the_page_set(db):
    State = state_model()
    member = emails.subscriber_hash("b@x.shop")
    page = records.read(db.session, State, AUDIENCE, {member: "b@x.shop"})
    assert page[member].id is None  # unknown to the ledger: inserted when written
    # Meanwhile a webhook stores the member as unsubscribed.
    ledger.member_state(db.session, State, AUDIENCE, member, "b@x.shop").status = "unsubscribed"
    db.session.flush()
    page[member].fingerprint, page[member].tags = "f2", "Customer"
    records.write(db.session, State, page.values())
    db.session.commit()
    stored = row(db, "b@x.shop")
    assert (stored.status, stored.fingerprint, stored.tags) == ("unsubscribed", "f2", "Customer")
    assert db.session.query(State).count() == 1
