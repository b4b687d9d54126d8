"""Helpers shared by the tests."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_mailchimp_sync import MailchimpSync

#: Every request body the plugin sent to an emulator during this test run; the spec
#: conformance test (which runs last) holds each against Mailchimp's published schemas.
PLUGIN_REQUESTS: list[dict[str, Any]] = []


def csrf_token(html: str) -> str:
    """The CSRF token of the (first) form on a page."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "the page has no CSRF token"
    return match.group(1)


def make_host(tmp_path: Any, name: str = "host") -> tuple[Flask, SQLAlchemy, MailchimpSync]:
    """A bare host app with one contact model, the extension not yet registered."""
    db = SQLAlchemy()

    class Customer(db.Model):  # type: ignore[name-defined]
        id = sa.Column(sa.Integer, primary_key=True)
        email = sa.Column(sa.String(255))
        opted_in = sa.Column(sa.Boolean)

    mailchimp = MailchimpSync(db=db)
    mailchimp.add_source(Customer, role="customer", email="email", marketing="opted_in")
    app = Flask(name)
    app.config.update(SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/{name}.db")
    db.init_app(app)
    return app, db, mailchimp
