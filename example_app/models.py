"""The shop's own tables. Consignors and customers are shaped differently on purpose:
a consignor has one ``name`` column and the flag on its own row; a customer has first
and last names and keeps the flag on a related preferences row."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import orm
from werkzeug.security import check_password_hash, generate_password_hash

db = SQLAlchemy()


class Staff(db.Model):  # type: ignore[name-defined]
    __tablename__ = "staff"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), nullable=False, unique=True)
    name = db.Column(db.String(120), nullable=False)
    password_hash = db.Column(db.String(255), nullable=False)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class Consignor(db.Model):  # type: ignore[name-defined]
    __tablename__ = "consignors"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(400), nullable=False)
    email = db.Column(db.String(255))
    phone = db.Column(db.String(40))
    marketing_opt_in = db.Column(db.Boolean, nullable=False, default=False)
    #: Store credit the shop owes the consignor (sales not yet paid out), in cents.
    credit_cents = db.Column(db.Integer, nullable=False, default=0)
    last_payout_on = db.Column(db.Date)
    items = db.relationship("Item", back_populates="consignor")


class Customer(db.Model):  # type: ignore[name-defined]
    __tablename__ = "customers"

    id = db.Column(db.Integer, primary_key=True)
    first_name = db.Column(db.String(400))
    last_name = db.Column(db.String(400))
    email = db.Column(db.String(255))
    created_at = db.Column(db.DateTime(timezone=True), default=lambda: datetime.now(UTC))
    preferences = db.relationship(
        "CustomerPreferences",
        uselist=False,
        back_populates="customer",
        cascade="all, delete-orphan",
    )

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class CustomerPreferences(db.Model):  # type: ignore[name-defined]
    __tablename__ = "customer_preferences"

    customer_id = db.Column(db.Integer, db.ForeignKey("customers.id"), primary_key=True)
    accepts_marketing = db.Column(db.Boolean, nullable=False, default=False)
    customer = db.relationship("Customer", back_populates="preferences")


class Item(db.Model):  # type: ignore[name-defined]
    __tablename__ = "items"

    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    price_cents = db.Column(db.Integer, nullable=False)
    consignor_id = db.Column(db.Integer, db.ForeignKey("consignors.id"), nullable=False)
    #: When the consignment period ends.
    expires_on = db.Column(db.Date)
    consignor = db.relationship("Consignor", back_populates="items")


#: Days before the end of its consignment period that an item counts as expiring soon.
EXPIRING_DAYS = 14

# Loaded with each consignor by the database, in the same query (no query per
# consignor, however many a Sync reads); "today" is taken when the query runs.
Consignor.expiring_items = orm.column_property(
    sa.select(sa.func.count(Item.id))
    .where(
        Item.consignor_id == Consignor.id,
        Item.expires_on >= sa.bindparam("expiring_from", callable_=date.today, type_=sa.Date),
        Item.expires_on
        <= sa.bindparam(
            "expiring_until",
            callable_=lambda: date.today() + timedelta(days=EXPIRING_DAYS),
            type_=sa.Date,
        ),
    )
    .correlate_except(Item)
    .scalar_subquery()
)
