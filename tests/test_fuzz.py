"""Hostile input, generated: no webhook body and no staff form answers 500.

Run on both databases in CI (PostgreSQL refuses what SQLite keeps, such as a value longer
than its column). Bounded: a fixed number of examples, derived from the test's name, so
a CI run takes the same time and finds the same things every time.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_mailchimp_sync import StoredKeyUnreadableError, emails
from flask_mailchimp_sync.testing import wait_for_jobs

from .helpers import PAGE, add_consignor, add_customer, csrf_token
from .test_unreadable_key import lose_the_key

BOUNDED = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Ben and Cleo are shop contacts; gone@ is a member the shop remembers, with no contact.
KNOWN = ["ben@mailbox.shop", "cleo@mailbox.shop", "gone@mailbox.shop", " BEN@mailbox.shop "]
BAD = ["", "ben@", "<script>alert('up')</script>", "a" * 300 + "@b.shop", "x y@z.io"]
KNOWN_ADDRESS = st.sampled_from(KNOWN)
ADDRESS = st.one_of(
    KNOWN_ADDRESS, KNOWN_ADDRESS, st.emails().map(str), st.sampled_from(BAD), st.text(max_size=80)
)
NAME = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=600), st.just("Ben\x07"))
NEEDS = {
    "unsubscribe": ["data[email]"],
    "cleaned": ["data[email]"],
    "profile": ["data[email]", "data[merges][FNAME]", "data[merges][LNAME]"],
    "upemail": ["data[old_email]", "data[new_email]"],
    "subscribe": ["data[email]"],
}
EXTRA = st.sampled_from(["data[email]", "data[new_email]", "data[merges][FNAME]", "data", "x"])


@st.composite
def webhook_bodies(draw: st.DrawFn, audience: str) -> dict[str, str]:
    """Mostly well-formed events about known people, with hostile values in their fields."""
    kind = draw(st.sampled_from([*NEEDS, "x"]))
    body = {"type": kind, "data[list_id]": draw(st.sampled_from([audience] * 4 + ["other", ""]))}
    for key in NEEDS.get(kind, []) + draw(st.lists(EXTRA, max_size=2)):
        body[key] = draw(NAME if "merges" in key else ADDRESS)
    return body


@BOUNDED
@given(data=st.data())
def test_no_webhook_body_makes_a_500(app, client, hooked, data):
    from example_app import mailchimp

    audience, url = hooked
    with app.app_context():
        if not mailchimp.settings_store().get().profile_updates:
            remember_a_member_without_contact(app)
    response = client.post(url, data=data.draw(webhook_bodies(audience)))
    assert response.status_code in (200, 400)
    with app.app_context():
        states = mailchimp.db.session.query(mailchimp.models.MemberState)
        assert all(emails.problem(state.email) is None for state in states)


def remember_a_member_without_contact(app) -> None:
    """Once per test: Cleo added; gone@ sent to Mailchimp, then deleted; profile updates on."""
    from example_app import mailchimp
    from example_app.models import db

    mailchimp.settings_store().get().profile_updates = True
    add_consignor(db, "Cleo Chen", "cleo@mailbox.shop")
    gone = add_customer(db, "Gone", "Away", "gone@mailbox.shop")
    wait_for_jobs(app)
    db.session.delete(gone)
    db.session.commit()
    wait_for_jobs(app)


ACTIONS = st.sampled_from(["connect", "audiences", "disconnect", "sync", "webhook-secret"])
PAGES = st.sampled_from(["", "runs", "runs/1", "runs/1.json", "runs/99999999999999999999"])
FIELDS = st.sampled_from(
    ["api_key", "role0_audience", "role1_audience", "role0_audience_id", "role1_audience_id",
     "role0_tag", "role1_tag", "double_opt_in", "profile_updates", "realtime", "sync", "preview"]
)  # fmt: skip
VALUE = st.one_of(
    st.text(max_size=60),
    st.text(min_size=200, max_size=1000),
    st.sampled_from(["y", "0" * 32 + "-us6", "a1b2c3d4e5", "A" * 33, "-1", "1e309"]),
)


@BOUNDED
@given(
    action=ACTIONS,
    form=st.dictionaries(FIELDS, VALUE, max_size=8),
    page=PAGES,
    query=st.sampled_from(["", "?page=", "?page=-1", "?page=99999999999999999999", "?outcome=x"]),
    key_lost=st.booleans(),
)
def test_no_staff_form_or_page_makes_a_500(
    app, staff_client, mailchimp_account, action, form, page, query, key_lost
):
    put_in_state(app, staff_client, mailchimp_account, key_lost=key_lost)
    form["csrf_token"] = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    assert staff_client.post(PAGE + action, data=form).status_code in (200, 302, 400)
    assert staff_client.get(PAGE + page + query).status_code in (200, 404)


def put_in_state(app, staff_client, account, *, key_lost: bool) -> None:
    """Connected (with the customer audience), its stored key readable or not."""
    from example_app import mailchimp

    with app.app_context():
        store = mailchimp.settings_store()
        connected = store.get() is not None and store.get().is_connected
        try:
            unreadable = connected and not store.api_key()
        except StoredKeyUnreadableError:
            unreadable = True
    if not connected or (unreadable and not key_lost):
        form_page = staff_client.get(PAGE).get_data(as_text=True)
        staff_client.post(
            PAGE + "connect",
            data={"csrf_token": csrf_token(form_page), "api_key": account.api_key,
                  "role1_audience_id": account.customers.id},
        )  # fmt: skip
        unreadable = False
    if key_lost and not unreadable:
        lose_the_key(app)
