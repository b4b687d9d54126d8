from __future__ import annotations

import re

import pytest

from example_app.models import Consignor, Customer, CustomerPreferences, db
from example_app.seed import BAD_EMAILS, seed

from .helpers import csrf_token

PAGES = ["/", "/consignors", "/customers", "/items", "/preferences/integrations"]


@pytest.mark.parametrize("path", [*PAGES, "/customers/1"])
def test_pages_redirect_to_login_when_logged_out(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_for_staff(app, staff_client, path):
    with app.app_context():
        seed(consignors=10, customers=10, both=3)
    response = staff_client.get(path)
    assert response.status_code == 200
    assert "Preferences &rsaquo; Integrations" in response.get_data(as_text=True)


def test_integrations_page_lists_mailchimp(staff_client):
    page = staff_client.get("/preferences/integrations").get_data(as_text=True)
    assert re.search(r">Mailchimp</a></td>\s*<td>\s*Not connected", page)
    assert 'href="/preferences/integrations/mailchimp/"' in page


def test_wrong_password_is_refused(client, staff_client):
    other = staff_client.application.test_client()
    token = csrf_token(other.get("/login").get_data(as_text=True))
    response = other.post(
        "/login", data={"email": "tester@marigold.shop", "password": "nope", "csrf_token": token}
    )
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert other.get("/").status_code == 302


def test_login_never_redirects_off_site(client, staff_client):
    other = staff_client.application.test_client()
    token = csrf_token(other.get("/login").get_data(as_text=True))
    response = other.post(
        "/login?next=//evil.example/x",
        data={"email": "tester@marigold.shop", "password": "pw", "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def add_customer(app, *, marketing: bool) -> int:
    with app.app_context():
        customer = Customer(first_name="Ada", last_name="Abbott", email="ada@mailbox.shop")
        customer.preferences = CustomerPreferences(accepts_marketing=marketing)
        db.session.add(customer)
        db.session.commit()
        return customer.id


def accepts_marketing(app, customer_id: int) -> bool:
    with app.app_context():
        return db.session.get(Customer, customer_id).preferences.accepts_marketing


def test_staff_turn_a_customers_marketing_flag_off(app, staff_client):
    customer_id = add_customer(app, marketing=True)
    page = staff_client.get(f"/customers/{customer_id}").get_data(as_text=True)
    assert re.search(r'name="accepts_marketing" type="checkbox" value="y"\s*checked', page) or (
        'checked id="accepts_marketing"' in page
    )
    response = staff_client.post(f"/customers/{customer_id}", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert accepts_marketing(app, customer_id) is False
    assert "Marketing preference saved." in staff_client.get(response.headers["Location"]).get_data(
        as_text=True
    )


def test_a_post_without_csrf_token_changes_nothing(app, staff_client):
    customer_id = add_customer(app, marketing=True)
    response = staff_client.post(f"/customers/{customer_id}", data={})
    assert response.status_code == 400
    assert accepts_marketing(app, customer_id) is True


def test_unknown_customer_is_404(staff_client):
    assert staff_client.get("/customers/999").status_code == 404


def test_seed_has_the_mess_of_a_real_shop(db):
    seed()
    consignors = db.session.query(Consignor).all()
    customers = db.session.query(Customer).all()
    assert len(consignors) + len(customers) >= 300
    emails = [c.email for c in consignors + customers]
    assert any(e is None for e in emails)
    assert any(e and e.strip() in BAD_EMAILS for e in emails)
    shared = {c.email for c in consignors if c.email} & {c.email for c in customers if c.email}
    assert len(shared) >= 20
    opted_in = sum(1 for c in customers if c.preferences.accepts_marketing)
    assert 0 < opted_in < len(customers)
    seed()  # seeding twice adds nothing
    assert db.session.query(Customer).count() == len(customers)


def test_the_registered_sources_read_the_seeded_shop(db):
    from example_app import mailchimp

    seed(consignors=20, customers=20, both=5)
    by_role = {
        source.role: list(source.iter_contacts(db.session, chunk_size=7))
        for source in mailchimp.sources
    }
    assert len(by_role["consignor"]) == 20 and len(by_role["customer"]) == 20
    ada = next(c for c in by_role["consignor"] if c.email and c.first_name)
    assert ada.last_name and ada.merge_fields["PHONE"].startswith("555-")
    shared_emails = {c.email for c in by_role["consignor"]} & {c.email for c in by_role["customer"]}
    assert len(shared_emails - {None}) >= 4
