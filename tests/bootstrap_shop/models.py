"""The shop's own tables, on its own base model: an ``id`` and NOT NULL timestamps on
every table, as many shops do. Nothing here knows about Mailchimp."""

from __future__ import annotations

import sqlalchemy as sa
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import check_password_hash, generate_password_hash

from ..hosts import StampedModel as BaseModel  # an id, created_at and updated_at

db = SQLAlchemy(model_class=BaseModel)


class User(UserMixin, db.Model):  # type: ignore[name-defined]
    """Customers and staff alike; the shop has no marketing flag of its own."""

    __tablename__ = "users"

    email = sa.Column(sa.String(255), nullable=False, unique=True)
    username = sa.Column(sa.String(80), nullable=False)
    password_hash = sa.Column(sa.String(255), nullable=False, default="")
    is_staff = sa.Column(sa.Boolean, nullable=False, default=False)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class Product(db.Model):  # type: ignore[name-defined]
    __tablename__ = "products"

    title = sa.Column(sa.String(200), nullable=False)
    price_cents = sa.Column(sa.Integer, nullable=False)
