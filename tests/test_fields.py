"""Typed merge fields: declared, created in Mailchimp, filled with typed values, refused
in Mailchimp's own words; and what the page, the CLI and a run's summary say of them."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from .helpers import add_consignor, connect_shop, csrf_token, items, sync

PAGE = "/preferences/integrations/mailchimp/"
DECLARED = {"PHONE": "phone", "CREDIT": "number", "EXPIRING": "number", "LASTPAID": "date"}


def field_types(emulator, audience_id):
    return {tag: f["type"] for tag, f in emulator.state.audiences[audience_id].merge_fields.items()}


def consignor_with_trade(db, email="ada@mailbox.shop", *, credit_cents=4050, expiring_in=3):
    from example_app.models import Item

    consignor = add_consignor(db, "Ada Abbott", email, phone="555-0101")
    consignor.credit_cents = credit_cents
    consignor.last_payout_on = date(2026, 3, 14)
    consignor.items.append(
        Item(title="Wool coat", price_cents=9000, expires_on=date.today() + timedelta(expiring_in))
    )
    db.session.commit()
    return consignor


@pytest.fixture
def shop(app, mailchimp_account):
    """Connected: consignors and customers in their own audiences."""
    with app.app_context():
        connect_shop(
            mailchimp_account.api_key,
            {
                "consignor": mailchimp_account.consignors.id,
                "customer": mailchimp_account.customers.id,
            },
        )
    return mailchimp_account


def test_fields_reports_then_create_makes_the_missing_typed_fields(app, runner, emulator, shop):
    consignors, customers = shop.consignors.id, shop.customers.id
    before = field_types(emulator, customers)

    report = runner.invoke(args=["mailchimp", "fields"])
    assert report.exit_code == 0, report.output
    assert "CREDIT" in report.output and "missing" in report.output
    assert "3 missing" in report.output  # PHONE is there already, as a phone field
    assert "CREDIT" not in field_types(emulator, consignors)

    created = runner.invoke(args=["mailchimp", "fields", "--create"])
    assert created.exit_code == 0, created.output
    assert "Created CREDIT in consignor" in created.output
    fields = emulator.state.audiences[consignors].merge_fields
    assert {tag: fields[tag]["type"] for tag in DECLARED} == DECLARED
    assert fields["CREDIT"]["name"] == "Store credit"
    assert fields["LASTPAID"]["name"] == "Last payout"
    assert field_types(emulator, customers) == before  # customers declare no fields

    again = runner.invoke(args=["mailchimp", "fields", "--create"])
    assert "Created" not in again.output and "missing" not in again.output


def test_a_sync_fills_the_fields_with_typed_values_and_tags(app, runner, emulator, shop):
    assert runner.invoke(args=["mailchimp", "fields", "--create"]).exit_code == 0
    with app.app_context():
        from example_app.models import db

        consignor_with_trade(db)
        add_consignor(db, "Bo Baker", "bo@mailbox.shop")  # no credit, nothing expiring
        run = sync()
        assert run.state == "done" and run.added == 2 and not run.notes

    ada = emulator.state.member(shop.consignors.id, "ada@mailbox.shop")
    assert ada.status == "subscribed"
    assert ada.merge_fields["CREDIT"] == 40.5
    assert ada.merge_fields["EXPIRING"] == 1
    assert ada.merge_fields["LASTPAID"] == "2026-03-14"
    assert ada.merge_fields["PHONE"] == "555-0101"
    assert set(ada.tags) == {"Consignor", "Has credit", "Items expiring"}
    bo = emulator.state.member(shop.consignors.id, "bo@mailbox.shop")
    assert bo.merge_fields["CREDIT"] == 0 and isinstance(bo.merge_fields["CREDIT"], int)
    assert set(bo.tags) == {"Consignor"}


def test_a_sync_into_an_audience_lacking_a_field_says_so(app, staff_client, emulator, shop):
    with app.app_context():
        from example_app.models import db

        consignor_with_trade(db)
        run = sync()
        run_id = run.id
        assert run.state == "done" and run.added == 1
        assert "CREDIT, EXPIRING, LASTPAID" in run.notes
        assert "flask mailchimp fields --create" in run.notes
    ada = emulator.state.member(shop.consignors.id, "ada@mailbox.shop")
    assert "CREDIT" not in ada.merge_fields and "PHONE" in ada.merge_fields
    page = staff_client.get(f"{PAGE}runs/{run_id}").get_data(as_text=True)
    assert "has no merge field CREDIT, EXPIRING, LASTPAID" in page


@pytest.mark.parametrize("where", ["with the CLI", "in Mailchimp"])
def test_after_creating_the_missing_fields_the_next_sync_fills_them(
    app, runner, emulator, shop, where
):
    """What the run's note tells staff to do: create the fields, then sync again (a plain
    Sync: Ada did not change, but the audience can hold more of her now)."""
    with app.app_context():
        from example_app.models import db

        consignor_with_trade(db)
        assert sync().added == 1
    if where == "with the CLI":
        created = runner.invoke(args=["mailchimp", "fields", "--create"])
        assert created.exit_code == 0, created.output
    else:
        audience = emulator.state.audiences[shop.consignors.id]
        for tag, kind in (("CREDIT", "number"), ("EXPIRING", "number"), ("LASTPAID", "date")):
            emulator.state.add_merge_field(audience, {"tag": tag, "name": tag, "type": kind})
    with app.app_context():
        run = sync()
        assert run.state == "done" and not run.notes
    ada = emulator.state.member(shop.consignors.id, "ada@mailbox.shop")
    assert ada.merge_fields["CREDIT"] == 40.5 and ada.merge_fields["LASTPAID"] == "2026-03-14"


def test_a_wrong_typed_value_is_a_per_contact_failure_in_mailchimps_words(
    app, runner, emulator, shop
):
    """Staff made LASTPAID a number in Mailchimp: the date is refused, for that contact
    only, in Mailchimp's words; the others sync, and the run is done."""
    assert runner.invoke(args=["mailchimp", "fields", "--create"]).exit_code == 0
    emulator.state.audiences[shop.consignors.id].merge_fields["LASTPAID"]["type"] = "number"
    with app.app_context():
        from example_app.models import db

        ada = consignor_with_trade(db)
        add_consignor(db, "Bo Baker", "bo@mailbox.shop")
        run = sync()
        assert run.state == "done" and run.added == 1 and run.failed == 1
        outcome, reason = items(run)["ada@mailbox.shop"]
        assert outcome == "failed"
        assert "Your merge fields were invalid" in reason
        assert "LASTPAID: Please enter a number" in reason
        assert emulator.state.member(shop.consignors.id, "ada@mailbox.shop") is None

        # An existing member (an update, PUT) is refused the same way.
        emulator.state.audiences[shop.consignors.id].merge_fields["LASTPAID"]["type"] = "date"
        # The same data refused before is not sent again until it changes, or --full.
        assert sync().failed == 1
        assert sync(full=True).added == 1
        emulator.state.audiences[shop.consignors.id].merge_fields["CREDIT"]["type"] = "date"
        ada.credit_cents = 100
        db.session.commit()
        run = sync()
        assert run.state == "done" and run.failed == 1
        outcome, reason = items(run)["ada@mailbox.shop"]
        assert "Mailchimp refused the request: Your merge fields were invalid." in reason
        assert "CREDIT: Please enter the date" in reason
    member = emulator.state.member(shop.consignors.id, "ada@mailbox.shop")
    assert member.status == "subscribed" and member.merge_fields["CREDIT"] == 40.5


def test_the_fields_section_shows_each_field_and_creates_the_missing(
    app, staff_client, emulator, shop
):
    consignors = shop.consignors.id
    emulator.state.audiences[consignors].merge_fields["PHONE"]["type"] = "text"
    html = staff_client.get(PAGE).get_data(as_text=True)
    assert "<h2>Fields</h2>" in html
    assert 'data-field-tag="CREDIT" data-field-state="missing"' in html
    assert 'data-field-tag="PHONE" data-field-state="other type"' in html
    assert "present with another type (text)" in html
    assert "Create missing fields" in html

    refused = staff_client.post(f"{PAGE}fields", data={"create_fields": "1"})
    assert refused.status_code == 400  # no CSRF token
    assert "CREDIT" not in field_types(emulator, consignors)

    token = csrf_token(html)
    done = staff_client.post(f"{PAGE}fields", data={"csrf_token": token, "create_fields": "1"})
    assert done.status_code == 302
    assert field_types(emulator, consignors)["CREDIT"] == "number"
    assert field_types(emulator, consignors)["PHONE"] == "text"  # staff's choice stands
    html = staff_client.get(PAGE).get_data(as_text=True)
    assert "Created CREDIT in consignor, EXPIRING in consignor, LASTPAID in consignor." in html
    assert 'data-field-tag="CREDIT" data-field-state="present"' in html
    assert "Create missing fields" not in html


def test_text_is_cut_to_mailchimps_limit_with_the_reason_recorded(tmp_path, emulator):
    from flask_mailchimp_sync import MergeField

    from .helpers import make_host

    app, db, mailchimp = make_host(tmp_path, "notes")
    (source,) = mailchimp.sources
    mailchimp.sources.clear()
    mailchimp.add_source(
        source.model,
        role="customer",
        email="email",
        marketing="opted_in",
        merge_fields={"NOTE": MergeField("Note", "text", lambda c: "x" * 300)},
    )
    account, (audience,) = emulator.add_account_with_audiences("Shop", "Everyone")
    emulator.state.add_merge_field(audience, {"tag": "NOTE", "name": "Note", "type": "text"})
    app.config.update(MAILCHIMP_SYNC_API_URL=emulator.api_url, MAILCHIMP_SYNC_RETRY_BACKOFF=0.01)
    mailchimp.authorize(lambda: True)
    mailchimp.init_app(app)
    with app.app_context():
        db.create_all()
        db.session.add(source.model(id=1, email="long@mailbox.shop", opted_in=True))
        db.session.commit()
        connect_shop(account.api_key, {"customer": audience.id}, extension=mailchimp)
        run = sync(mailchimp)
        assert run.state == "done" and run.added == 1 and run.skipped == 0
        Item = mailchimp.models.SyncRunItem
        (item,) = db.session.query(Item).filter_by(run_id=run.id).all()
        assert item.outcome == "trimmed"
        assert item.reason == "NOTE was cut to Mailchimp's limit of 255 characters."
        # A resync reads only what changed: the new contact is reported, not the first.
        db.session.add(source.model(id=2, email="new@mailbox.shop", opted_in=True))
        db.session.commit()
        again = sync(mailchimp)
        assert again.added == 1 and again.skipped == 0
        reported = db.session.query(Item).filter_by(run_id=again.id).all()
        assert [(i.outcome, i.contact_key) for i in reported] == [("trimmed", "2")]
        db.drop_all()
    assert emulator.state.member(audience.id, "long@mailbox.shop").merge_fields["NOTE"] == "x" * 255


def test_the_cli_sync_summary_names_the_missing_fields(app, runner, shop):
    with app.app_context():
        from example_app.models import db

        consignor_with_trade(db)
    result = runner.invoke(args=["mailchimp", "sync"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output
    assert (
        "Note: The audience consignor has no merge field CREDIT, EXPIRING, LASTPAID"
        in result.output
    )


def test_mailchimp_failing_leaves_the_page_working_and_says_so(app, staff_client, emulator, shop):
    emulator.faults.fail_next(2, "500")  # the audience list, then the fields: one try each
    response = staff_client.get(PAGE)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Could not read its fields" in html and "<h2>Fields</h2>" in html

    token = csrf_token(html)
    emulator.faults.fail_next(1, "500")
    done = staff_client.post(f"{PAGE}fields", data={"csrf_token": token, "create_fields": "1"})
    assert done.status_code == 302
    assert "The fields could not be created" in staff_client.get(PAGE).get_data(as_text=True)
    assert "CREDIT" not in field_types(emulator, shop.consignors.id)
