"""Bad input to the staff pages: never a 500, never stored, never an unauthorized change."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import connect_shop, csrf_token

PAGE = "/preferences/integrations/mailchimp/"
FIELDS = st.sampled_from(
    ["api_key", "role0_audience", "role1_audience", "role0_audience_id", "role1_audience_id",
     "role0_tag", "role1_tag", "double_opt_in", "profile_updates", "realtime", "confirm", "sync", "preview",
     "role9_tag", "csrf_token"]
)  # fmt: skip
TEXT = st.one_of(st.text(max_size=120), st.sampled_from(["", "y", "0" * 32 + "-us6", "a1b2c3d4e5"]))
ACTIONS = st.sampled_from(["connect", "audiences", "disconnect", "sync", "webhook-secret"])
RELAXED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def stored(app):
    from example_app import mailchimp

    with app.app_context():
        s = mailchimp.settings_store().get()
        return (
            None
            if s is None
            else (s.is_connected, sorted((a.role, a.audience_id) for a in s.audiences))
        )


@RELAXED
@given(action=ACTIONS, form=st.dictionaries(FIELDS, TEXT, max_size=8), with_token=st.booleans())
def test_random_forms_while_not_connected_never_500_nor_connect(
    app, staff_client, emulator, action, form, with_token
):
    if with_token:
        form["csrf_token"] = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    response = staff_client.post(PAGE + action, data=form)
    assert response.status_code in (200, 302, 400)
    assert stored(app) in (None, (False, []))


@RELAXED
@given(action=ACTIONS, form=st.dictionaries(FIELDS, TEXT, max_size=8))
def test_random_forms_while_connected_keep_only_real_audiences(
    app, staff_client, mailchimp_account, action, form
):
    if stored(app) is None:
        with app.app_context():
            connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    form["csrf_token"] = csrf_token(staff_client.get(PAGE).get_data(as_text=True))
    response = staff_client.post(PAGE + action, data=form)
    assert response.status_code in (200, 302, 400)
    real = {mailchimp_account.customers.id, mailchimp_account.consignors.id}
    state = stored(app)
    assert {audience for _role, audience in state[1]} <= real
    if action == "disconnect" and response.status_code == 302:
        with app.app_context():
            connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})


def test_someone_not_logged_in_changes_nothing(app, client, mailchimp_account):
    with app.app_context():
        connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    before = stored(app)
    for action in ("connect", "audiences", "disconnect", "sync", "webhook-secret"):
        response = client.post(PAGE + action, data={"api_key": mailchimp_account.api_key})
        assert response.status_code in (302, 400, 403)  # to the login page, or no CSRF token
        token = csrf_token(client.get("/login").get_data(as_text=True))
        response = client.post(
            PAGE + action, data={"csrf_token": token, "api_key": mailchimp_account.api_key}
        )
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert stored(app) == before
