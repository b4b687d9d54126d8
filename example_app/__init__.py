"""Marigold Consignment: a small consignment shop that uses flask-mailchimp-sync.

It registers the extension exactly as any host would, through its public API only.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, g, redirect, request, url_for
from flask_wtf import CSRFProtect

from flask_mailchimp_sync import MailchimpSync, MergeField

from .models import Consignor, Customer, db

csrf = CSRFProtect()
mailchimp = MailchimpSync(db=db)

# A consignor has a single name column: split it for Mailchimp's FNAME / LNAME.
mailchimp.add_source(
    Consignor,
    role="consignor",
    email="email",
    marketing="marketing_opt_in",
    first_name=lambda consignor: consignor.name.partition(" ")[0],
    last_name=lambda consignor: consignor.name.partition(" ")[2],
    merge_fields={
        "PHONE": MergeField("Phone Number", "phone", "phone"),
        # What a consignment shop mails about: credit, items about to expire, payouts.
        "CREDIT": MergeField("Store credit", "number", lambda c: c.credit_cents / 100),
        "EXPIRING": MergeField("Items expiring soon", "number", "expiring_items"),
        "LASTPAID": MergeField("Last payout", "date", "last_payout_on"),
    },
    tags=lambda c: (
        ({"Has credit"} if c.credit_cents > 0 else set())
        | ({"Items expiring"} if c.expiring_items else set())
    ),
)
# A customer keeps the opt-in on a related preferences row.
mailchimp.add_source(
    Customer,
    role="customer",
    email="email",
    marketing="preferences.accepts_marketing",
    first_name="first_name",
    last_name="last_name",
    # Sync reports link each contact to its page, where staff can fix it.
    url=lambda customer: url_for("shop.customer", customer_id=customer.id),
)


@mailchimp.authorize
def staff_only() -> Any:
    """Only logged-in staff manage the integration; others are sent to log in."""
    if g.get("staff") is None:
        return redirect(url_for("auth.login", next=request.path))
    return True


def instance_secret_key(instance_path: str) -> str:
    """This instance's own random SECRET_KEY, made on first start and kept in the
    instance folder (readable by its owner only).

    Never a key written in the code: anyone who knows it could forge a staff login
    and decrypt the stored Mailchimp API key.
    """
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path, encoding="ascii") as existing:
            key = existing.read().strip()
            if key:
                return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    # O_EXCL: two processes starting at once keep the first one's key.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return instance_secret_key(instance_path)
    with os.fdopen(descriptor, "w", encoding="ascii") as new:
        new.write(key)
    return key


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SECRET_KEY=os.environ.get("SHOP_SECRET_KEY") or instance_secret_key(app.instance_path),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "SHOP_DATABASE_URL", "sqlite:///" + os.path.join(app.instance_path, "shop.db")
        ),
        # The plugin's pages wear the shop's own layout.
        MAILCHIMP_SYNC_BASE_TEMPLATE="shop/base.html",
    )
    # FLASK_MAILCHIMP_SYNC_REDIS_URL=... and the like, for deployments and workers.
    app.config.from_prefixed_env()
    app.config.update(config or {})

    db.init_app(app)
    csrf.init_app(app)
    mailchimp.init_app(app)

    from .auth import auth
    from .views import shop

    app.register_blueprint(auth)
    app.register_blueprint(shop)

    from .seed import seed_command

    app.cli.add_command(seed_command)
    return app
