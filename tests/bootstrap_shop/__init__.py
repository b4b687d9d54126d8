"""Fern & Finch: a host shaped like a typical third-party Flask shop, for tests.

An app factory; a ``model_class`` giving every table an ``id`` and NOT NULL
timestamps; Flask-Login staff; a Bootstrap layout with its own block names (and a
menu variable its views pass); no marketing flag until the integrator added a consent
table through a backref; ``REDIS_URL`` always set, whether or not a Redis runs.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_wtf import CSRFProtect

from .auth import login_manager
from .integration import mailchimp
from .models import db

csrf = CSRFProtect()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="fern-and-finch",
        SQLALCHEMY_DATABASE_URI="sqlite://",
        # The shop's cache and rate limiter use this; no Redis runs in development.
        REDIS_URL="redis://127.0.0.1:6379/0",
        # ...so Mailchimp jobs run in the web process, whatever REDIS_URL says.
        MAILCHIMP_SYNC_REDIS_URL=False,
        # The shop's layout has other block names: a three-line bridge maps them.
        MAILCHIMP_SYNC_BASE_TEMPLATE="mailchimp/layout.html",
    )
    app.config.update(config or {})

    from . import marketing  # noqa: F401 (the consent table, added for Mailchimp)
    from .views import shop

    db.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    mailchimp.init_app(app)
    app.register_blueprint(shop)
    return app
