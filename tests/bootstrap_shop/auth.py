"""Staff log in with Flask-Login, as in most Flask shops."""

from __future__ import annotations

from typing import Any

from flask_login import LoginManager

from .models import User, db

login_manager = LoginManager()
login_manager.login_view = "shop.login"


@login_manager.user_loader
def load_user(user_id: str) -> Any:
    return db.session.get(User, int(user_id))
