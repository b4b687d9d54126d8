"""Staff login: the shop's own, deliberately small."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from .models import Staff, db

auth = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


@auth.before_app_request
def load_staff() -> None:
    staff_id = session.get("staff_id")
    g.staff = db.session.get(Staff, staff_id) if staff_id else None


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("staff") is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return wrapped


def safe_next(target: str) -> str | None:
    """*target* when it is a path on this site, else ``None``.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
    ``/%09/evil.example`` or ``/\\evil.example`` would leave the site: such characters
    are refused, and what is left must be a plain path (no scheme, no host).
    """
    if not target.startswith("/") or any(c <= " " or c in "\\\x7f" for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        staff = db.session.execute(
            db.select(Staff).filter_by(email=form.email.data.strip().lower())
        ).scalar_one_or_none()
        if staff is not None and staff.check_password(form.password.data):
            session.clear()
            session["staff_id"] = staff.id
            return redirect(safe_next(request.args.get("next", "")) or url_for("shop.dashboard"))
        error = "Wrong email or password."
    return render_template("shop/login.html", form=form, error=error)


@auth.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
