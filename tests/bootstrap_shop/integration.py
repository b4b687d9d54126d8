"""The whole Mailchimp glue of the shop, as the README's "Add it to an existing shop"
writes it. The source is declared before the consent model exists: its path through
the backref is resolved on first use."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_login import current_user

from flask_mailchimp_sync import MailchimpSync

from .auth import login_manager
from .models import User, db

mailchimp = MailchimpSync(db=db)
mailchimp.add_source(User, role="customer", email="email", marketing="marketing.accepts_marketing")


@mailchimp.authorize
def staff_only() -> Any:
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # the shop's login page, then back here
    return bool(current_user.is_staff)


@mailchimp.context_processor
def shop_layout() -> dict[str, Any]:
    from .views import main_menu

    return {"nav_items": main_menu()}


def menu_link() -> tuple[str, str]:
    return "Mailchimp", url_for("mailchimp_sync.settings_page")
