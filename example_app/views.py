"""The shop's pages: dashboard, consignors, customers, items, preferences."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField

from .auth import login_required
from .models import Consignor, Customer, CustomerPreferences, Item, db

shop = Blueprint("shop", __name__)

PAGE_SIZE = 50


class MarketingForm(FlaskForm):
    accepts_marketing = BooleanField("Accepts marketing email")


@shop.get("/")
@login_required
def dashboard() -> Any:
    counts = {
        "consignors": db.session.query(Consignor).count(),
        "customers": db.session.query(Customer).count(),
        "items": db.session.query(Item).count(),
    }
    return render_template("shop/dashboard.html", counts=counts)


@shop.get("/consignors")
@login_required
def consignors() -> Any:
    page = db.paginate(db.select(Consignor).order_by(Consignor.name), per_page=PAGE_SIZE)
    return render_template("shop/consignors.html", page=page)


@shop.get("/customers")
@login_required
def customers() -> Any:
    query = db.select(Customer).order_by(Customer.last_name, Customer.first_name)
    search = request.args.get("q", "").strip()
    if search:
        pattern = f"%{search}%"
        query = query.where(
            db.or_(
                Customer.email.ilike(pattern),
                Customer.first_name.ilike(pattern),
                Customer.last_name.ilike(pattern),
            )
        )
    page = db.paginate(query, per_page=PAGE_SIZE)
    return render_template("shop/customers.html", page=page, search=search)


@shop.route("/customers/<int:customer_id>", methods=["GET", "POST"])
@login_required
def customer(customer_id: int) -> Any:
    found = db.session.get(Customer, customer_id) or abort(404)
    preferences = found.preferences or CustomerPreferences(customer=found)
    form = MarketingForm(accepts_marketing=preferences.accepts_marketing)
    if form.validate_on_submit():
        preferences.accepts_marketing = bool(form.accepts_marketing.data)
        db.session.add(preferences)
        db.session.commit()
        flash("Marketing preference saved.")
        return redirect(url_for("shop.customer", customer_id=customer_id))
    return render_template("shop/customer.html", customer=found, form=form)


@shop.get("/items")
@login_required
def items() -> Any:
    page = db.paginate(db.select(Item).order_by(Item.id.desc()), per_page=PAGE_SIZE)
    return render_template("shop/items.html", page=page)


@shop.get("/preferences/integrations")
@login_required
def integrations() -> Any:
    from . import mailchimp

    settings = mailchimp.settings_store().get()
    return render_template("shop/integrations.html", mailchimp_settings=settings)
