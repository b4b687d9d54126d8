"""A new member Mailchimp refused stays in sight: every Sync lists it as failed again,
with Mailchimp's words, and sends nothing for it until the contact changes. Its
contacts stay linked as before, so a person's refusal still follows them and an
address put right is still noticed."""

from __future__ import annotations

from .helpers import add_consignor, add_customer, connect_shop, counts, items, sync, writes
from .helpers import members as held_in_mailchimp
from .hosts import sync as sync_host

REFUSED = "walk-in@example.com looks fake or invalid, please enter a real email address."


def set_flag(db, customer, value):
    customer.preferences.accepts_marketing = value
    db.session.commit()


def set_email(db, contact, email):
    contact.email = email
    db.session.commit()


def test_a_refused_new_member_is_listed_as_failed_by_every_sync(db, emulator, shared):
    add_customer(db, "Walk", "In", "walk-in@example.com")
    add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1, "failed": 1}
    before = len(emulator.state.requests)
    for _ in range(3):  # the same data is not sent again, and never drops out of the list
        run = sync()
        assert counts(run) == {"unchanged": 1, "failed": 1}
        assert items(run)["walk-in@example.com"] == ("failed", REFUSED)
    assert writes(emulator, before) == []


def test_a_restore_refused_as_unsubscribed_is_not_sent_again(db, emulator, shared):
    """The shop archived Ben, who had unsubscribed first (the ledger never saw it);
    staff tick him again. The refused restore is reported once, and never repeated."""
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    set_flag(db, ben, False)
    assert counts(sync()) == {"archived": 1}
    emulator.state.member(shared, "ben@mailbox.shop").status = "unsubscribed"
    set_flag(db, ben, True)
    assert counts(sync()) == {"blocked": 1}
    before = len(emulator.state.requests)
    for _ in range(2):
        sync()
    assert writes(emulator, before) == []


def test_an_address_put_right_after_a_refused_move_brings_the_member_back(db, emulator, shared):
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    set_email(db, ben, "ben@example.com")  # a typo Mailchimp refuses
    assert counts(sync())["failed"] == 1
    assert counts(sync())["failed"] == 1
    set_email(db, ben, "ben@mailbox.shop")
    sync()
    assert held_in_mailchimp(emulator, shared)["ben@mailbox.shop"][0] == "subscribed"


def test_a_contact_put_right_gets_its_tag_back_on_a_shared_address(db, emulator, shared):
    ada = add_consignor(db, "Ada Lovelace", "ada@mailbox.shop", phone="555-0101")
    add_customer(db, "Ada", "L.", "ada@mailbox.shop")
    assert counts(sync()) == {"added": 1}
    set_email(db, ada, "ada@example.com")
    sync()
    sync()
    set_email(db, ada, "ada@mailbox.shop")
    sync()
    assert held_in_mailchimp(emulator, shared)["ada@mailbox.shop"][1] == ["Consignor", "Customer"]


def test_a_refused_contact_keeps_its_persons_unsubscribe_when_its_address_changes(
    db, emulator, shared
):
    """Fay asked Mailchimp to forget her (adds are refused), joined again by Mailchimp's
    own form and unsubscribed there; then her address changes in the shop."""
    emulator.state.add_member(shared, "fay@mailbox.shop", "subscribed")
    emulator.state.delete_permanently(emulator.state.audiences[shared], "fay@mailbox.shop")
    fay = add_customer(db, "Fay", "Gone", "fay@mailbox.shop")
    assert counts(sync()) == {"failed": 1}
    assert counts(sync()) == {"failed": 1}
    emulator.state.add_member(shared, "fay@mailbox.shop", "unsubscribed")
    set_email(db, fay, "fay@newmail.shop")
    sync()
    assert "fay@newmail.shop" not in held_in_mailchimp(emulator, shared)
    assert fay.preferences.accepts_marketing is False


def test_refused_data_of_an_address_with_two_contacts_is_not_sent_again(db, emulator, shared):
    """Which contact's name wins at a shared address must not decide whether refused
    data goes out again: listing a refused member again sends nothing."""
    add_consignor(db, "Ada Lovelace", "ada@example.com")
    customer = add_customer(db, "Ada", "L.", "ada@example.com")
    for _ in range(3):
        assert counts(sync()) == {"failed": 1}
    customer.last_name = "Lee"
    db.session.commit()
    for _ in range(2):
        assert counts(sync()) == {"failed": 1}
    before = len(emulator.state.requests)
    for _ in range(2):
        run = sync()
        assert counts(run) == {"failed": 1}
        assert "looks fake" in items(run)["ada@example.com"][1]
    assert writes(emulator, before) == []


def test_a_refusal_in_an_audience_a_role_left_is_not_listed_there(db, emulator, mailchimp_account):
    """The consignors move to another audience: the refusal in the old one is not
    listed (its contact is now synced elsewhere), and the counts still add up."""
    from example_app import mailchimp

    old, new = sorted([mailchimp_account.customers.id, mailchimp_account.consignors.id])
    connect_shop(mailchimp_account.api_key, {"consignor": old, "customer": old})
    add_consignor(db, "Walk In", "walk-in@example.com")
    ben = add_customer(db, "Ben", "Baker", "ben@mailbox.shop")
    assert counts(sync()) == {"added": 1, "failed": 1}
    assert counts(sync()) == {"unchanged": 1, "failed": 1}
    ben.preferences.accepts_marketing = False
    db.session.commit()
    assert counts(sync()) == {"archived": 1, "failed": 1}
    mailchimp.settings_store().set_audience("consignor", new, name="New", tag="Consignor")
    db.session.commit()
    preview = sync(dry_run=True)  # sends nothing, so nothing moves
    assert counts(preview) == {"not_opted_in": 1, "added": 1}
    assert preview.processed == preview.total == 2


def test_on_every_host_shape_a_refusal_is_listed_until_the_flag_goes_off(host_shop, emulator):
    """The supplier's flag is on its row, on a related row, or behind a callable; its
    address is spelled with capitals and spaces. Listed while it consents, not after."""
    host, audience = host_shop
    supplier = host.add_supplier("  Walk-In@EXAMPLE.com ")
    host.add_patron("pat@mailbox.io")
    first = sync_host(host)
    assert (first.added, first.failed) == (1, 1)
    before = len(emulator.state.requests)
    for _ in range(2):
        run = sync_host(host)
        assert (run.unchanged, run.failed) == (1, 1)
    host.set_flag(supplier, False)
    run = sync_host(host)
    assert (run.unchanged, run.failed, run.not_opted_in) == (1, 0, 1)
    assert writes(emulator, before) == []
    assert set(held_in_mailchimp(emulator, audience)) == {"pat@mailbox.io"}
