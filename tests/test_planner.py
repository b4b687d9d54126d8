"""The consent rules, exhaustively: every wish against every state Mailchimp may hold."""

from __future__ import annotations

import itertools

import pytest

from flask_mailchimp_sync.engine.planner import (
    ACTIVE,
    Action,
    Decision,
    Known,
    Wanted,
    blocks,
    decide,
)

STATUSES = [None, "subscribed", "pending", "unsubscribed", "cleaned", "transactional", "archived"]
WANTED = Wanted(
    "ann@mailbox.shop", consent=True, tags=frozenset({"Customer"}), merge_fields={"FNAME": "Ann"}
)
UNWANTED = Wanted("ann@mailbox.shop", consent=False)


def knowns():
    for status, sent, by_shop, same in itertools.product(
        STATUSES, [False, True], [False, True], [False, True]
    ):
        yield Known(
            status=status,
            sent=sent,
            archived_by_shop=by_shop,
            fingerprint=WANTED.fingerprint if same else "old",
        )


@pytest.mark.parametrize("known", [None, *knowns()])
@pytest.mark.parametrize("wanted", [None, UNWANTED])
def test_without_consent_nothing_is_added_and_only_the_shops_own_are_archived(wanted, known):
    action = decide(wanted, known).action
    assert action in (Action.ARCHIVE, Action.UNCHANGED)
    if action is Action.ARCHIVE:
        assert known.sent and known.status in ACTIVE


@pytest.mark.parametrize("known", list(knowns()))
def test_with_consent_an_existing_members_status_is_never_changed(known):
    decision = decide(WANTED, known)
    if known.status in ("unsubscribed", "cleaned", "transactional"):
        assert decision.action is Action.BLOCKED and known.status in decision.reason
    elif known.status == "archived":
        expected = Action.RESTORE if known.archived_by_shop else Action.BLOCKED
        assert decision.action is expected
    elif known.status in ACTIVE:
        same = known.fingerprint == WANTED.fingerprint
        assert decision.action is (Action.UNCHANGED if same else Action.UPDATE)
    else:
        assert decision.action is Action.ADD


def test_a_new_address_is_added_with_its_tags():
    decision = decide(WANTED, None)
    assert decision.action is Action.ADD and decision.add_tags == {"Customer"}


def test_full_resends_unchanged_members():
    known = Known("subscribed", sent=True, fingerprint=WANTED.fingerprint)
    assert decide(WANTED, known).action is Action.UNCHANGED
    assert decide(WANTED, known, full=True).action is Action.UPDATE


def test_tags_follow_roles():
    known = Known(
        "subscribed", sent=True, fingerprint="old", tags=frozenset({"Consignor", "Customer"})
    )
    decision = decide(WANTED, known)
    assert decision.remove_tags == {"Consignor"} and not decision.add_tags


def test_an_email_change_moves_the_member():
    old = Known("subscribed", sent=True, fingerprint="x")
    assert decide(WANTED, None, previous=old, can_move=True).action is Action.MOVE
    # another contact still has the old address: its member stays, the new one is added
    assert decide(WANTED, None, previous=old, can_move=False).action is Action.ADD
    # a member the shop never sent is not taken along: the new address is added
    assert decide(WANTED, None, previous=Known("subscribed"), can_move=True).action is Action.ADD


def test_consent_refused_under_another_address_is_not_a_new_subscription():
    reason = "unsubscribed in Mailchimp (before the address changed)"
    nobody_else = Wanted("ann@mailbox.shop", consent=False)
    assert decide(nobody_else, None, refused=reason) == Decision(Action.BLOCKED, reason)
    # someone else at the new address consents: their consent counts
    assert decide(WANTED, None, refused=reason).action is Action.ADD
    # a member the shop created there already: archived, as for any consent withdrawn
    shop_sent = Known("subscribed", sent=True)
    assert decide(nobody_else, shop_sent, refused=reason).action is Action.ARCHIVE


@pytest.mark.parametrize("known", list(knowns()))
def test_refusing_members_are_the_ones_that_follow_the_person(known):
    hidden = known.status == "archived" and not known.archived_by_shop  # an unsubscribe, perhaps
    assert blocks(known) is (known.status in ("unsubscribed", "cleaned") or hidden)


def test_a_refused_address_is_not_sent_again_until_it_changes():
    refused = Known(None, fingerprint=WANTED.fingerprint, error="looks fake or invalid")
    assert decide(WANTED, refused).action is Action.REJECTED
    assert decide(WANTED, Known(None, fingerprint="other", error="looks fake")).action is Action.ADD
    assert decide(WANTED, refused, full=True).action is Action.ADD


def test_fingerprint_ignores_case_of_the_address_and_order_of_fields():
    a = Wanted("Ann@Mailbox.shop", True, frozenset({"A", "B"}), {"FNAME": "Ann", "LNAME": "X"})
    b = Wanted("ann@mailbox.shop", True, frozenset({"B", "A"}), {"LNAME": "X", "FNAME": "Ann"})
    assert a.fingerprint == b.fingerprint
    assert (
        a.fingerprint
        != Wanted("ann@mailbox.shop", True, a.tags, {"FNAME": "Anne", "LNAME": "X"}).fingerprint
    )
