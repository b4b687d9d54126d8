"""Consent follows the person through address changes, on more than one host shape."""

from __future__ import annotations

import pytest

from flask_mailchimp_sync.engine.shop import withdraw

from .hosts import settle, sync


def test_an_unsubscribed_person_stays_blocked_through_an_invalid_address(host_shop, emulator):
    host, audience = host_shop
    patron = host.add_patron("pat@mailbox.io")
    assert sync(host).added == 1
    emulator.state.set_status(audience, "pat@mailbox.io", "unsubscribed")

    host.set_email(patron, "not an address")  # skipped by syncs, but still the same person
    assert sync(host).state == "done"
    assert host.flag(patron) is False  # the pull found the person through their link

    host.set_flag(patron, True)  # staff tick the box again, and a new address arrives
    host.set_email(patron, "pat@newmail.io")
    run = sync(host)

    assert run.state == "done" and run.blocked == 1
    assert emulator.state.member(audience, "pat@newmail.io") is None
    assert emulator.state.member(audience, "pat@mailbox.io").visible_status == "unsubscribed"


@pytest.mark.parametrize("deliver", ["sync", "real time"])
def test_a_bounced_person_who_moves_onto_a_non_consenting_address_stays_blocked(
    host_shop, emulator, deliver
):
    """The new address has no consent of its own, so nothing is sent to it at first; the
    person must still be linked to their bounced member when staff tick the box again."""
    host, audience = host_shop
    host.mailchimp.settings_store().get().realtime = deliver == "real time"
    host.db.session.commit()
    host.add_patron("zed@mailbox.io", opt_in=False)
    supplier = host.add_supplier("alvaro@correo.es")
    assert sync(host).added == 1
    emulator.state.set_status(audience, "alvaro@correo.es", "cleaned")

    host.set_email(supplier, "zed@mailbox.io")
    settle(host, deliver)
    assert host.flag(supplier) is False  # the bounce was found through the person's link

    host.set_flag(supplier, True)  # staff tick the box again
    settle(host, deliver)
    assert emulator.state.member(audience, "zed@mailbox.io") is None
    assert emulator.state.member(audience, "alvaro@correo.es").visible_status == "cleaned"


@pytest.mark.parametrize("deliver", ["sync", "real time"])
def test_a_bounced_person_who_joins_a_subscribed_address_does_not_keep_it_subscribed(
    host_shop, emulator, deliver
):
    """Nothing changes for the member they join (it is subscribed already); when its own
    contact leaves, the bounced person's ticked box is not consent enough to keep it."""
    host, audience = host_shop
    host.mailchimp.settings_store().get().realtime = deliver == "real time"
    host.db.session.commit()
    patron = host.add_patron("zed@mailbox.io")
    supplier = host.add_supplier("alvaro@correo.es")
    assert sync(host).added == 2
    emulator.state.set_status(audience, "alvaro@correo.es", "cleaned")

    host.set_email(supplier, "zed@mailbox.io")
    settle(host, deliver)
    assert host.flag(supplier) is False
    host.set_flag(supplier, True)  # staff tick the box again
    settle(host, deliver)
    host.set_flag(patron, False)
    settle(host, deliver)
    assert emulator.state.member(audience, "zed@mailbox.io").visible_status == "archived"
    assert emulator.state.member(audience, "alvaro@correo.es").visible_status == "cleaned"


def test_an_unsubscribe_turns_off_every_contact_of_the_address_in_every_role(host_shop):
    """Many contacts of one person, in both roles, none linked yet (found by address);
    only those whose flag was on are counted as turned off, whatever the flag's shape."""
    host, audience = host_shop
    for _ in range(5):
        host.add_patron("bea@fastpost.net", opt_in=False)
    for _ in range(5):
        host.add_supplier(" Bea@FastPost.net")
    host.db.session.expunge_all()  # only what withdrawing reads is held

    turned_off = withdraw(host.mailchimp, audience, "BEA@fastpost.net", "unsubscribed")
    host.db.session.commit()

    assert turned_off == 5
    assert [host.flag(s) for s in host.db.session.query(host.Supplier)] == [False] * 5
