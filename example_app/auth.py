"""Staff login: the shop's own, deliberately small."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

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
            target = request.args.get("next", "")
            # Only same-site paths, so the login page cannot be used to bounce elsewhere.
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("shop.dashboard")
            return redirect(target)
        error = "Wrong email or password."
    return render_template("shop/login.html", form=form, error=error)


@auth.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
