"""Consent follows the person through address changes, on more than one host shape."""

from __future__ import annotations

import pytest

from .conftest import database_url
from .hosts import connect, drop_host, make_host, sync


@pytest.fixture(params=["row", "callable"])
def shop(request, tmp_path, emulator):
    host = make_host(request.param, database_url(tmp_path), emulator.api_url)
    account, (audience,) = emulator.add_account_with_audiences("Host", "Everyone")
    with host.app.app_context():
        connect(host, account.api_key, audience.id, realtime=False)
        yield host, audience.id
    drop_host(host)


def test_an_unsubscribed_person_stays_blocked_through_an_invalid_address(shop, emulator):
    host, audience = shop
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
