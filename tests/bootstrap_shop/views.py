"""The shop's own pages (a few, enough to have a menu and a login)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from .models import Product, User, db

shop = Blueprint("shop", __name__)


def main_menu() -> list[tuple[str, str]]:
    """The navbar; every view passes it to the layout, as this shop always did."""
    from .integration import menu_link

    items = [("Products", url_for("shop.products"))]
    if current_user.is_authenticated and current_user.is_staff:
        items.append(menu_link())
    return items


@shop.get("/")
def products() -> Any:
    listed = db.session.execute(db.select(Product).order_by(Product.title)).scalars()
    return render_template("products.html", products=list(listed), nav_items=main_menu())


@shop.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        user = db.session.execute(
            db.select(User).filter_by(email=request.form.get("email", ""))
        ).scalar_one_or_none()
        if user is not None and user.check_password(request.form.get("password", "")):
            login_user(user)
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") else url_for("shop.products"))
        flash("Wrong email or password.", "danger")
    return render_template("login.html", nav_items=main_menu())


@shop.post("/logout")
@login_required
def logout() -> Any:
    logout_user()
    return redirect(url_for("shop.products"))
