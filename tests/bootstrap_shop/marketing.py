"""What the integrator added, because the shop had no marketing consent: a table of
its own, reached from ``User`` through a backref declared here (the Alembic migration
for it is in the README's "Add it to an existing shop")."""

from __future__ import annotations

import sqlalchemy as sa

from .models import User, db


class MarketingConsent(db.Model):  # type: ignore[name-defined]
    __tablename__ = "marketing_consents"

    user_id = sa.Column(sa.ForeignKey("users.id"), nullable=False, unique=True)
    accepts_marketing = sa.Column(sa.Boolean, nullable=False, default=False)
    user = db.relationship(
        User, backref=db.backref("marketing", uselist=False, cascade="all, delete-orphan")
    )
