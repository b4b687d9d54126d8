"""Demo data: a few hundred contacts with the mess a real shop has.

Deterministic (a fixed random seed), so the demo's Mailchimp account can be preloaded
with members that match shop contacts.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import click
from flask.cli import with_appcontext

from .models import Consignor, Customer, CustomerPreferences, Item, Staff, db

DEMO_STAFF_EMAIL = "staff@marigold.shop"
DEMO_STAFF_PASSWORD = "consign-demo"

FIRST = ["Ada", "Ben", "Cleo", "Dev", "Esme", "Finn", "Gia", "Hugo", "Iris", "Jon", "Kai",
         "Lena", "Milo", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tess", "Uma", "Vic",
         "Wren", "Xena", "Yuki", "Zane"]  # fmt: skip
LAST = ["Abbott", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
        "Jensen", "Kowalski", "Lopez", "Murphy", "Nguyen", "Okafor", "Patel", "Quist",
        "Rossi", "Singh", "Tanaka", "Ueda", "Varga", "Weber", "Young", "Zhou"]  # fmt: skip
DOMAINS = ["mailbox.shop", "fastpost.net", "inkwell.org", "hearth.io"]
ITEMS = ["Wool coat", "Leather boots", "Silk scarf", "Denim jacket", "Vintage lamp",
         "Oak table", "Ceramic vase", "Record player", "Linen dress", "Canvas tote"]  # fmt: skip
#: What shops really hold: blanks, typos and placeholder addresses Mailchimp refuses.
BAD_EMAILS = ["", "   ", "not-an-email", "anna@", "walk-in@example.com", "no email", "x@y"]


def email_for(first: str, last: str, n: int, rng: random.Random) -> str:
    return f"{first}.{last}{n}@{rng.choice(DOMAINS)}".lower()


def seed(consignors: int = 120, customers: int = 240, both: int = 30) -> None:
    """Fill an empty shop database; does nothing if the shop already has customers."""
    if db.session.query(Customer).count():
        return
    rng = random.Random(2026)
    staff = Staff(email=DEMO_STAFF_EMAIL, name="Demo Staff")
    staff.set_password(DEMO_STAFF_PASSWORD)
    db.session.add(staff)

    people = [(rng.choice(FIRST), rng.choice(LAST)) for _ in range(consignors + customers - both)]
    for n, (first, last) in enumerate(people[:consignors]):
        email = rng.choice(BAD_EMAILS) if n % 25 == 7 else email_for(first, last, n, rng)
        consignor = Consignor(
            name=f"{first} {last}",
            email=email or None,
            phone=f"555-{rng.randrange(1000, 9999)}",
            marketing_opt_in=rng.random() < 0.7,
        )
        db.session.add(consignor)
        for _ in range(rng.randrange(0, 4)):
            db.session.add(
                Item(
                    title=rng.choice(ITEMS),
                    price_cents=rng.randrange(500, 25000),
                    consignor=consignor,
                )
            )
    db.session.flush()
    _consignment_trade()

    # The first `both` customers are consignors too: same person, same email.
    shared = db.session.query(Consignor).order_by(Consignor.id).limit(both).all()
    for consignor in shared:
        first, _, last = consignor.name.partition(" ")
        _add_customer(first, last, consignor.email, rng)
    for n, (first, last) in enumerate(people[consignors:], start=consignors):
        email = rng.choice(BAD_EMAILS) if n % 25 == 7 else email_for(first, last, n, rng)
        _add_customer(first, last, email or None, rng)
    db.session.commit()


def _consignment_trade() -> None:
    """Credit, payouts and expiry dates, from a random stream of their own (the contacts
    above stay as they were, matching the demo's preloaded Mailchimp account)."""
    rng = random.Random(17)
    today = date.today()
    for consignor in db.session.query(Consignor).order_by(Consignor.id):
        consignor.credit_cents = rng.choice([0, 0, rng.randrange(100, 20000)])
        if rng.random() < 0.6:
            consignor.last_payout_on = today - timedelta(days=rng.randrange(1, 120))
        for item in consignor.items:
            item.expires_on = today + timedelta(days=rng.randrange(-10, 90))


def _add_customer(first: str, last: str, email: str | None, rng: random.Random) -> None:
    customer = Customer(first_name=first, last_name=last, email=email)
    customer.preferences = CustomerPreferences(accepts_marketing=rng.random() < 0.75)
    db.session.add(customer)


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Create the shop's tables and fill them with demo data."""
    db.create_all()
    seed()
    click.echo(f"Seeded. Staff login: {DEMO_STAFF_EMAIL} / {DEMO_STAFF_PASSWORD}")
