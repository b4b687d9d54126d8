"""MergeField declarations and the formatting of values per Mailchimp type (pure)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from flask_mailchimp_sync import MergeField
from flask_mailchimp_sync.engine.staging import contact_problem
from flask_mailchimp_sync.merge_fields import check_tag, formatted, tag_names
from flask_mailchimp_sync.sources import Contact


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("number", 40.5, 40.5),
        ("number", 4050 / 100, 40.5),
        ("number", 3.0, 3),
        ("number", Decimal("12.50"), 12.5),
        ("number", " 7 ", 7),
        ("number", "lots", "lots"),  # sent as is: Mailchimp refuses it in its words
        ("number", True, "True"),
        ("number", float("nan"), "nan"),
        ("date", date(2026, 3, 14), "2026-03-14"),
        ("date", datetime(2026, 3, 14, 18, 5), "2026-03-14"),
        ("date", "2026-03-14", "2026-03-14"),
        ("birthday", date(1990, 7, 4), "07/04"),
        ("address", {"addr1": "1 Elm St", "zip": 30301, "addr2": None},
         {"addr1": "1 Elm St", "zip": "30301", "addr2": ""}),
        ("zip", 30301, "30301"),
        ("phone", " 555-0101 ", "555-0101"),
        ("url", "https://marigold.shop", "https://marigold.shop"),
        ("text", "  Ada  ", "Ada"),
        ("text", None, None),
        ("number", "", None),
    ],
)  # fmt: skip
def test_values_are_formatted_for_their_type(kind, value, expected):
    assert formatted(kind, value) == (expected, None)


def test_text_is_cut_to_the_limit_with_a_note():
    value, note = formatted("text", "é" * 300)
    assert value == "é" * 255
    assert note == "was cut to Mailchimp's limit of 255 characters"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("Credit", "money", "credit"), "'money' is not a Mailchimp merge field type"),
        (("", "number", "credit"), "needs a name"),
        (("x" * 51, "number", "credit"), "at most 50 characters"),
        (("Credit", "number", None), "needs a value"),
    ],
)
def test_a_declaration_mailchimp_could_not_take_is_refused_clearly(arguments, message):
    with pytest.raises(ValueError, match=message):
        MergeField(*arguments)


@pytest.mark.parametrize("tag", ["credit", "TOOLONGATAG1", "1CREDIT", "CR-EDIT", ""])
def test_a_merge_tag_mailchimp_could_not_have_is_refused(tag):
    with pytest.raises(ValueError, match="cannot be a Mailchimp merge tag"):
        check_tag(tag)


def test_tags_callables_may_answer_a_set_a_list_one_name_or_nothing():
    assert tag_names({"Has credit", " ", ""}) == {"Has credit"}
    assert tag_names(["A", "A ", "B"]) == {"A", "B"}
    assert tag_names("Has credit") == {"Has credit"}
    assert tag_names(None) == frozenset()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("VIP, gold", "The tag 'VIP, gold' has a comma"),
        ("x" * 101, "longer than Mailchimp's 100 characters"),
    ],
)
def test_a_tag_the_shop_cannot_keep_skips_its_contact_with_the_reason(name, reason):
    contact = Contact("s", "customer", "1", "a@mailbox.shop", None, None, True, tags={name})
    assert reason in contact_problem(contact)
    assert (
        contact_problem(Contact("s", "customer", "1", "a@mailbox.shop", None, None, True)) is None
    )


def test_merge_fields_given_as_a_dict_must_be_declarations(db):
    from example_app.models import Customer
    from flask_mailchimp_sync.sources import ContactSource

    with pytest.raises(TypeError, match="must be declared with MergeField"):
        ContactSource(
            Customer, role="customer", email="email", marketing="email", merge_fields={"X": "email"}
        )
    with pytest.raises(TypeError, match="tags must be a callable"):
        ContactSource(Customer, role="customer", email="email", marketing="email", tags={"A"})
