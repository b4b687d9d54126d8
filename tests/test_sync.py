"""Sync against the emulator: what Mailchimp ends up holding, and what staff are told."""

from __future__ import annotations

import pytest

from .helpers import (
    add_consignor,
    add_customer,
    connect_shop,
    counts,
    items,
    members,
    sync,
    writes,
)


def test_full_sync_into_one_shared_audience(db, emulator, shared):
    add_consignor(db, "Ada Lovelace", "ada@mailbox.shop", phone="555-0101")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop", opted_in=False)
    run = sync()
    assert run.state == "done", run.error
    assert counts(run) == {"added": 2, "not_opted_in": 1}
    assert members(emulator, shared) == {
        "ada@mailbox.shop": (
            "subscribed",
            ["Consignor"],
            {"FNAME": "Ada", "LNAME": "Lovelace", "PHONE": "555-0101"},
        ),
        "ben@mailbox.shop": ("subscribed", ["Customer"], {"FNAME": "Ben", "LNAME": "Baker"}),
    }
    assert [(r["method"], r["path"]) for r in writes(emulator)] == [("POST", f"/lists/{shared}")]


def test_full_sync_into_two_audiences(db, emulator, mailchimp_account):
    connect_shop(
        mailchimp_account.api_key,
        {"consignor": mailchimp_account.consignors.id, "customer": mailchimp_account.customers.id},
    )
    add_consignor(db, "Ada Lovelace", "ada@mailbox.shop")
    add_customer(db, "Ada", "Lovelace", "ada@mailbox.shop")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    run = sync()
    assert counts(run) == {"added": 3}
    assert set(members(emulator, mailchimp_account.consignors.id)) == {"ada@mailbox.shop"}
    assert set(members(emulator, mailchimp_account.customers.id)) == {
        "ada@mailbox.shop",
        "ben@mailbox.shop",
    }


def test_a_consignor_who_is_a_customer_is_one_member_with_both_tags(db, emulator, shared):
    add_consignor(db, "Ada Lovelace", "Ada@Mailbox.shop")
    add_customer(db, "Ada", "L.", " ada@mailbox.shop ")
    run = sync()
    assert counts(run) == {"added": 1}
    (only,) = members(emulator, shared).values()
    assert only[0] == "subscribed" and only[1] == ["Consignor", "Customer"]
    assert only[2]["LNAME"] == "Lovelace"  # the first registered source's value wins


def test_an_unsubscribed_member_is_never_resubscribed_and_is_reported(db, emulator, shared):
    emulator.state.add_member(shared, "gone@mailbox.shop", "unsubscribed")
    emulator.state.add_member(shared, "bounced@mailbox.shop", "cleaned")
    add_customer(db, "Gone", "Away", "gone@mailbox.shop")
    add_customer(db, "Bo", "Unce", "bounced@mailbox.shop")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    run = sync()
    assert counts(run) == {"added": 1, "blocked": 2}
    assert items(run)["gone@mailbox.shop"] == ("blocked", "unsubscribed in Mailchimp")
    assert items(run)["bounced@mailbox.shop"][1].startswith("cleaned in Mailchimp")
    assert members(emulator, shared)["gone@mailbox.shop"][0] == "unsubscribed"
    assert members(emulator, shared)["bounced@mailbox.shop"][0] == "cleaned"
    # nothing ever asked Mailchimp to change their status
    assert all("status" not in (r["body"] or {}) for r in writes(emulator) if r["method"] == "PUT")


def test_someone_who_unsubscribes_after_a_sync_stays_unsubscribed(db, emulator, shared):
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    emulator.state.set_status(shared, "ben@mailbox.shop", "unsubscribed")
    db.session.execute(db.text("UPDATE customers SET last_name = 'Bakerson'"))
    db.session.commit()
    run = sync(full=True)
    assert counts(run) == {"blocked": 1}
    assert members(emulator, shared)["ben@mailbox.shop"][0] == "unsubscribed"


def test_a_member_already_in_mailchimp_is_updated_without_a_status_change(db, emulator, shared):
    emulator.state.add_member(
        shared, "pending@mailbox.shop", "pending", merge_fields={"FNAME": "P"}
    )
    add_customer(db, "Pat", "Pending", "pending@mailbox.shop")
    run = sync()
    assert counts(run) == {"updated": 1}
    assert members(emulator, shared)["pending@mailbox.shop"] == (
        "pending",
        ["Customer"],
        {"FNAME": "Pat", "LNAME": "Pending"},
    )


def test_bad_emails_are_skipped_with_reasons_and_the_rest_sync(db, emulator, shared):
    add_customer(db, "No", "Mail", None)
    add_customer(db, "Blank", "Mail", "   ")
    add_customer(db, "Typo", "Mail", "anna@")
    add_customer(db, "Quiet", "Typo", "quiet@", opted_in=False)  # never sent anyway
    add_customer(db, "Long", "x" * 300, "long@mailbox.shop")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    run = sync()
    assert counts(run) == {"added": 1, "skipped": 4}
    reported = sorted(reason for outcome, reason in items(run).values())
    assert reported == [
        "LNAME is longer than 255 characters",
        "no email address",
        "no email address",
        "not a valid email address: 'anna@'",
    ]
    assert set(members(emulator, shared)) == {"ben@mailbox.shop"}


def test_a_looks_fake_refusal_is_recorded_with_mailchimps_words(db, emulator, shared):
    add_customer(db, "Walk", "In", "walk-in@example.com")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    run = sync()
    assert counts(run) == {"added": 1, "failed": 1}
    assert items(run)["walk-in@example.com"] == (
        "failed",
        "walk-in@example.com looks fake or invalid, please enter a real email address.",
    )
    before = len(emulator.state.requests)
    again = sync()  # the same refused data is not sent again...
    assert counts(again) == {"unchanged": 1, "failed": 1} and writes(emulator, before) == []


def test_a_second_sync_with_no_changes_makes_no_write_requests(db, emulator, shared):
    for n in range(30):
        add_customer(db, f"C{n}", "Shop", f"c{n}@mailbox.shop", opted_in=n % 3 != 0)
    add_consignor(db, "C1 Shop", "c1@mailbox.shop")
    sync()
    before = len(emulator.state.requests)
    run = sync()
    assert counts(run) == {"unchanged": 20, "not_opted_in": 10}
    assert writes(emulator, before) == []


def test_only_changed_contacts_are_sent_again(db, emulator, shared):
    customers = [add_customer(db, f"C{n}", "Shop", f"c{n}@mailbox.shop") for n in range(10)]
    sync()
    before = len(emulator.state.requests)
    customers[3].last_name = "Changed"
    db.session.commit()
    run = sync()
    assert counts(run) == {"updated": 1, "unchanged": 9}
    sent = writes(emulator, before)
    assert [(r["method"], r["body"]["merge_fields"]) for r in sent] == [
        ("PUT", {"FNAME": "C3", "LNAME": "Changed"})
    ]
    assert "status" not in sent[0]["body"] and sent[0]["body"]["status_if_new"] == "subscribed"


def test_batches_hold_at_most_500_members(db, emulator, shared):
    from example_app.models import Customer, CustomerPreferences

    db.session.add_all(
        Customer(
            email=f"c{n}@mailbox.shop", preferences=CustomerPreferences(accepts_marketing=True)
        )
        for n in range(1100)
    )
    db.session.commit()
    run = sync()
    assert counts(run) == {"added": 1100}
    batches = [r for r in writes(emulator) if r["path"] == f"/lists/{shared}"]
    # pages go out side by side, so in any order
    assert sorted(len(r["body"]["members"]) for r in batches) == [100, 500, 500]
    assert len(writes(emulator)) == 3


def test_flag_off_archives_only_members_the_shop_sent(db, emulator, shared):
    emulator.state.add_member(shared, "signup@mailbox.shop", "subscribed")  # joined on a form
    add_customer(db, "Sign", "Up", "signup@mailbox.shop", opted_in=False)
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    ben.preferences.accepts_marketing = False
    db.session.commit()
    run = sync()
    assert counts(run) == {"archived": 1, "not_opted_in": 1}
    assert members(emulator, shared)["ben@mailbox.shop"][0] == "archived"
    assert members(emulator, shared)["signup@mailbox.shop"][0] == "subscribed"


def test_a_deleted_contact_is_archived(db, emulator, shared):
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop")
    sync()
    db.session.delete(ben)
    db.session.commit()
    run = sync()
    assert counts(run) == {"archived": 1, "unchanged": 1}
    assert members(emulator, shared)["ben@mailbox.shop"][0] == "archived"


def test_flag_on_again_brings_back_a_member_the_shop_archived(db, emulator, shared):
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    ben.preferences.accepts_marketing = False
    db.session.commit()
    sync()
    ben.preferences.accepts_marketing = True
    db.session.commit()
    run = sync()
    assert counts(run) == {"added": 1}
    assert members(emulator, shared)["ben@mailbox.shop"][0] == "subscribed"


def test_a_member_archived_in_mailchimp_by_staff_is_not_brought_back(db, emulator, shared):
    emulator.state.add_member(shared, "old@mailbox.shop", "subscribed").archived = True
    add_customer(db, "Old", "Friend", "old@mailbox.shop")
    run = sync()
    assert counts(run) == {"blocked": 1}
    assert items(run)["old@mailbox.shop"] == ("blocked", "archived in Mailchimp")
    assert members(emulator, shared)["old@mailbox.shop"][0] == "archived"


def test_an_email_change_moves_the_member_without_a_duplicate(db, emulator, shared):
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    ben.email = "ben.baker@fastpost.net"
    db.session.commit()
    run = sync()
    assert counts(run) == {"updated": 1}
    assert members(emulator, shared) == {
        "ben.baker@fastpost.net": ("subscribed", ["Customer"], {"FNAME": "Ben", "LNAME": "Baker"})
    }


def test_a_role_that_ends_takes_its_tag_away(db, emulator, shared):
    ada = add_consignor(db, "Ada Lovelace", "ada@mailbox.shop")
    add_customer(db, "Ada", "Lovelace", "ada@mailbox.shop")
    sync()
    ada.marketing_opt_in = False
    db.session.commit()
    run = sync()
    assert counts(run) == {"updated": 1}
    assert members(emulator, shared)["ada@mailbox.shop"][:2] == ("subscribed", ["Customer"])


def test_double_opt_in_adds_pending_members(db, emulator, mailchimp_account):
    connect_shop(
        mailchimp_account.api_key, {"customer": mailchimp_account.customers.id}, double_opt_in=True
    )
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    assert members(emulator, mailchimp_account.customers.id)["ben@mailbox.shop"][0] == "pending"


def test_merge_fields_the_audience_lacks_are_left_out(db, emulator, shared):
    del emulator.state.audiences[shared].merge_fields["PHONE"]
    add_consignor(db, "Ada Lovelace", "ada@mailbox.shop", phone="555-0101")
    run = sync()
    assert counts(run) == {"added": 1}
    assert members(emulator, shared)["ada@mailbox.shop"][2] == {"FNAME": "Ada", "LNAME": "Lovelace"}


def test_a_role_left_without_audience_is_not_synced(db, emulator, mailchimp_account):
    connect_shop(mailchimp_account.api_key, {"customer": mailchimp_account.customers.id})
    add_consignor(db, "Ada Lovelace", "ada@mailbox.shop")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    sync()
    assert set(members(emulator, mailchimp_account.customers.id)) == {"ben@mailbox.shop"}
    assert members(emulator, mailchimp_account.consignors.id) == {}


def test_preview_sends_nothing_and_says_what_would_happen(db, emulator, shared):
    emulator.state.add_member(shared, "gone@mailbox.shop", "unsubscribed")
    add_customer(db, "Gone", "Away", "gone@mailbox.shop")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    add_customer(db, "Typo", "Mail", "anna@")
    run = sync(dry_run=True)
    assert run.dry_run and counts(run) == {"added": 1, "blocked": 1, "skipped": 1}
    assert writes(emulator) == []
    assert counts(sync()) == {"added": 1, "blocked": 1, "skipped": 1}


@pytest.mark.parametrize(
    "kind", ["429", "429-bare", "403-bare", "500", "503-bare", "timeout", "drop"]
)
def test_throttling_and_failures_are_retried_to_the_right_end_state(
    app, db, emulator, shared, kind
):
    app.config["MAILCHIMP_SYNC_TIMEOUT"] = 0.5
    emulator.faults.hang_seconds = 0.8
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    add_customer(db, "Cleo", "Chen", "cleo@mailbox.shop")
    emulator.faults.fail_next(3, kind)
    run = sync()
    assert run.state == "done", run.error
    ben.last_name = "Bakerson"
    ben.preferences.accepts_marketing = True
    db.session.commit()
    emulator.faults.fail_next(2, kind)
    assert sync().state == "done"
    assert {e: m[:2] for e, m in members(emulator, shared).items()} == {
        "ben@mailbox.shop": ("subscribed", ["Customer"]),
        "cleo@mailbox.shop": ("subscribed", ["Customer"]),
    }
    assert members(emulator, shared)["ben@mailbox.shop"][2]["LNAME"] == "Bakerson"


def test_mailchimp_down_fails_the_run_clearly_and_the_next_run_finishes(app, db, emulator, shared):
    app.config["MAILCHIMP_SYNC_MAX_RETRIES"] = 2
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    emulator.faults.fail_next(50, "503-bare")
    run = sync()
    assert run.state == "failed" and "HTTP 503" in run.error
    emulator.faults.clear()
    assert counts(sync()) == {"added": 1}


def test_bursts_of_429_across_a_large_sync(app, db, emulator, shared):
    from example_app.models import Customer, CustomerPreferences

    db.session.add_all(
        Customer(
            email=f"c{n}@mailbox.shop",
            preferences=CustomerPreferences(accepts_marketing=n % 2 == 0),
        )
        for n in range(1200)
    )
    db.session.commit()
    emulator.faults.configure(error_rate=0.3, seed=4, random_kinds=["429", "429-bare", "500"])
    run = sync()
    emulator.faults.clear()
    assert run.state == "done", run.error
    assert counts(run) == {"added": 600, "not_opted_in": 600}
    assert len(emulator.state.members(shared)) == 600


def test_a_second_sync_while_one_runs_is_refused(db, shared):
    from example_app import mailchimp
    from flask_mailchimp_sync.engine import locks
    from flask_mailchimp_sync.exceptions import SyncRefused

    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert locks.acquire(
        db.session, mailchimp.models.Lock, locks.audience_locks([shared]), "other", 60
    )
    with pytest.raises(SyncRefused, match="already running"):
        sync()
    assert counts(sync(dry_run=True)) == {"added": 1}  # a preview may run beside it
    locks.release(db.session, mailchimp.models.Lock, locks.audience_locks([shared]), "other")
    assert counts(sync()) == {"added": 1}


def test_not_connected_or_no_audience_is_refused_with_a_reason(db, mailchimp_account):
    from flask_mailchimp_sync.exceptions import SyncRefused

    with pytest.raises(SyncRefused, match="Connect a Mailchimp account first"):
        sync()
    connect_shop(mailchimp_account.api_key, {})
    with pytest.raises(SyncRefused, match="No audience is chosen"):
        sync()


def test_many_changes_to_existing_members_go_as_one_batch_operation(db, emulator, shared):
    customers = [add_customer(db, f"C{n}", "Shop", f"c{n}@mailbox.shop") for n in range(40)]
    sync()
    before = len(emulator.state.requests)
    for customer in customers[:25]:
        customer.last_name = "Renamed"
    for customer in customers[25:]:
        customer.preferences.accepts_marketing = False
    db.session.commit()
    run = sync()
    assert counts(run) == {"updated": 25, "archived": 15}
    assert [(r["method"], r["path"]) for r in writes(emulator, before)] == [("POST", "/batches")]
    held = members(emulator, shared)
    assert sum(1 for m in held.values() if m[0] == "archived") == 15
    assert sum(1 for m in held.values() if m[2].get("LNAME") == "Renamed") == 25


def test_failures_inside_a_batch_operation_are_retried_one_by_one(db, emulator, shared):
    customers = [add_customer(db, f"C{n}", "Shop", f"c{n}@mailbox.shop") for n in range(25)]
    sync()
    for customer in customers:
        customer.last_name = "Renamed"
    db.session.commit()
    emulator.state.set_status(shared, "c3@mailbox.shop", "unsubscribed")
    run = sync()
    assert counts(run) == {"updated": 24, "blocked": 1}


def test_an_email_change_of_one_role_leaves_the_other_roles_member(db, emulator, shared):
    add_consignor(db, "Ada Lovelace", "ada@mailbox.shop")
    ada = add_customer(db, "Ada", "Lovelace", "ada@mailbox.shop")
    sync()
    ada.email = "ada.l@fastpost.net"
    db.session.commit()
    run = sync()
    assert counts(run) == {"added": 1, "updated": 1}
    held = members(emulator, shared)
    assert held["ada@mailbox.shop"][:2] == ("subscribed", ["Consignor"])
    assert held["ada.l@fastpost.net"][:2] == ("subscribed", ["Customer"])
