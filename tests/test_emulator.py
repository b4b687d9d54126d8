"""The emulator behaves like Mailchimp where the plugin depends on it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from flask_mailchimp_sync.testing.emulator import FAULT_KINDS


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


class Api:
    """Raw HTTP against the emulator, so every body and status is visible."""

    def __init__(self, emulator, api_key):
        self.base = emulator.api_url
        self.auth = ("anystring", api_key)

    def __call__(self, method, path, body=None, *, auth=True, timeout=5, **params):
        return requests.request(
            method,
            self.base + path.lstrip("/"),
            json=body,
            params=params or None,
            auth=self.auth if auth is True else auth,
            timeout=timeout,
        )


@pytest.fixture
def api(emulator, mailchimp_account):
    return Api(emulator, mailchimp_account.api_key)


@pytest.fixture
def list_id(mailchimp_account):
    return mailchimp_account.customers.id


def put(api, list_id, email, **body):
    return api("PUT", f"lists/{list_id}/members/{md5(email)}", {"email_address": email, **body})


# -- auth and reading ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "title"),
    [
        (("anystring", "ffffffffffffffffffffffffffffffff-us6"), "API Key Invalid"),
        (None, "API Key Missing"),
    ],
)
def test_a_wrong_or_missing_key_is_401_problem_json(api, auth, title):
    response = api("GET", "ping", auth=auth)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == title
    assert set(response.json()) >= {"type", "title", "status", "detail", "instance"}


def test_ping_and_account_root(api):
    assert api("GET", "ping").json() == {"health_status": "Everything's Chimpy!"}
    root = api("GET", "", fields="account_id,account_name").json()
    assert set(root) == {"account_id", "account_name"}
    assert root["account_name"] == "Marigold Consignment"


def test_lists_fields_count_and_offset(api, emulator, mailchimp_account):
    emulator.state.add_member(mailchimp_account.customers.id, "ann@mailbox.shop")
    body = api(
        "GET", "lists", fields="lists.id,lists.name,lists.stats.member_count,total_items"
    ).json()
    assert body == {
        "lists": [
            {
                "id": mailchimp_account.consignors.id,
                "name": "Consignors",
                "stats": {"member_count": 0},
            },
            {
                "id": mailchimp_account.customers.id,
                "name": "Customers",
                "stats": {"member_count": 1},
            },
        ],
        "total_items": 2,
    }
    page = api("GET", "lists", count=1, offset=1).json()
    assert [a["name"] for a in page["lists"]] == ["Customers"] and page["total_items"] == 2
    assert api("GET", "lists", count=5000).status_code == 400


def test_other_accounts_audiences_are_not_found(api, emulator):
    other = emulator.state.add_account("Other")
    foreign = emulator.state.add_audience(other, "Theirs")
    assert api("GET", f"lists/{foreign.id}").status_code == 404
    assert api("GET", "lists/nosuchlist").json()["title"] == "Resource Not Found"
    assert api("GET", "no/such/route").status_code == 404


# -- members: PUT, PATCH, DELETE ----------------------------------------------------


def test_put_without_email_address_is_400_by_schema(api, list_id):
    response = api(
        "PUT", f"lists/{list_id}/members/{md5('a@mailbox.shop')}", {"status_if_new": "subscribed"}
    )
    assert response.status_code == 400
    assert response.json()["title"] == "Invalid Resource"
    assert {
        "field": "email_address",
        "message": "This value should not be blank.",
    } in response.json()["errors"]


@pytest.mark.parametrize(
    "body",
    [
        {"email_address": "a@mailbox.shop"},  # no status_if_new
        {"email_address": "a@mailbox.shop", "status_if_new": "active"},  # not an enum value
        {"email_address": 42, "status_if_new": "subscribed"},
        {"email_address": "a@mailbox.shop", "status_if_new": "subscribed", "merge_fields": []},
        {"email_address": "a@mailbox.shop", "status_if_new": "subscribed", "vip": "yes"},
    ],
)
def test_put_bodies_are_checked_like_mailchimp(api, list_id, emulator, body):
    response = api("PUT", f"lists/{list_id}/members/{md5('a@mailbox.shop')}", body)
    assert response.status_code == 400 and response.json()["errors"]
    assert emulator.state.members(list_id) == {}


@pytest.mark.parametrize("status", ["subscribed", "pending", "unsubscribed", "transactional"])
def test_status_if_new_sets_a_new_members_status(api, list_id, emulator, status):
    response = put(
        api, list_id, "new@mailbox.shop", status_if_new=status, merge_fields={"FNAME": "N"}
    )
    assert response.status_code == 200 and response.json()["status"] == status
    member = emulator.state.member(list_id, "new@mailbox.shop")
    assert (member.status, member.merge_fields) == (status, {"FNAME": "N"})


@pytest.mark.parametrize("existing", ["subscribed", "pending", "unsubscribed", "cleaned"])
def test_status_if_new_never_changes_an_existing_members_status(api, list_id, emulator, existing):
    emulator.state.add_member(list_id, "old@mailbox.shop", existing)
    response = put(
        api, list_id, "old@mailbox.shop", status_if_new="subscribed", merge_fields={"LNAME": "O"}
    )
    assert response.status_code == 200
    member = emulator.state.member(list_id, "old@mailbox.shop")
    assert (member.status, member.merge_fields["LNAME"]) == (existing, "O")


@pytest.mark.parametrize(
    ("existing", "new", "allowed"),
    [
        ("unsubscribed", "subscribed", False),
        ("cleaned", "subscribed", False),
        ("unsubscribed", "pending", True),  # re-opt-in by confirmation email
        ("pending", "subscribed", True),
        ("subscribed", "unsubscribed", True),
        ("cleaned", "unsubscribed", True),
    ],
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_compliance_state_blocks_resubscribing(
    api, list_id, emulator, existing, new, allowed, method
):
    emulator.state.add_member(list_id, "m@mailbox.shop", existing)
    body = {"email_address": "m@mailbox.shop", "status": new, "status_if_new": "subscribed"}
    if method == "PATCH":
        body = {"status": new}
    response = api(method, f"lists/{list_id}/members/{md5('m@mailbox.shop')}", body)
    if allowed:
        assert response.status_code == 200 and response.json()["status"] == new
    else:
        assert response.status_code == 400
        assert response.json()["title"] == "Member In Compliance State"
        assert emulator.state.member(list_id, "m@mailbox.shop").status == existing


def test_delete_archives_and_status_if_new_does_not_bring_back(api, list_id, emulator):
    put(api, list_id, "arch@mailbox.shop", status_if_new="subscribed")
    assert api("DELETE", f"lists/{list_id}/members/{md5('arch@mailbox.shop')}").status_code == 204
    assert (
        api("GET", f"lists/{list_id}/members/{md5('arch@mailbox.shop')}").json()["status"]
        == "archived"
    )
    assert api("DELETE", f"lists/{list_id}/members/{md5('arch@mailbox.shop')}").status_code == 404
    assert api("GET", f"lists/{list_id}/members").json()["total_items"] == 0
    assert api("GET", f"lists/{list_id}/members", status="archived").json()["total_items"] == 1

    assert (
        put(api, list_id, "arch@mailbox.shop", status_if_new="subscribed").json()["status"]
        == "archived"
    )
    back = put(api, list_id, "arch@mailbox.shop", status_if_new="subscribed", status="subscribed")
    assert back.json()["status"] == "subscribed"
    assert len(emulator.state.members(list_id)) == 1


def test_unarchiving_an_unsubscribed_member_is_still_compliance_state(api, list_id, emulator):
    emulator.state.add_member(list_id, "gone@mailbox.shop", "unsubscribed")
    api("DELETE", f"lists/{list_id}/members/{md5('gone@mailbox.shop')}")
    response = put(
        api, list_id, "gone@mailbox.shop", status_if_new="subscribed", status="subscribed"
    )
    assert response.json()["title"] == "Member In Compliance State"
    assert emulator.state.member(list_id, "gone@mailbox.shop").archived


@pytest.mark.parametrize(
    ("email", "detail"),
    [
        ("walk-in@example.com", "looks fake or invalid"),
        ("someone@shop.test", "looks fake or invalid"),
        ("not-an-email", "valid email address"),
        ("anna@", "valid email address"),
    ],
)
def test_fake_or_invalid_addresses_are_refused(api, list_id, emulator, email, detail):
    response = api(
        "PUT",
        f"lists/{list_id}/members/{md5(email)}",
        {"email_address": email, "status_if_new": "subscribed"},
    )
    assert response.status_code == 400 and detail in response.json()["detail"]
    assert emulator.state.members(list_id) == {}


def test_email_change_moves_the_member_without_a_duplicate(api, list_id, emulator):
    put(api, list_id, "old@mailbox.shop", status_if_new="subscribed")
    response = api(
        "PATCH",
        f"lists/{list_id}/members/{md5('old@mailbox.shop')}",
        {"email_address": "new@mailbox.shop"},
    )
    assert response.status_code == 200 and response.json()["id"] == md5("new@mailbox.shop")
    assert list(emulator.state.members(list_id)) == ["new@mailbox.shop"]
    put(api, list_id, "other@mailbox.shop", status_if_new="subscribed")
    clash = api(
        "PATCH",
        f"lists/{list_id}/members/{md5('other@mailbox.shop')}",
        {"email_address": "new@mailbox.shop"},
    )
    assert clash.status_code == 400 and clash.json()["title"] == "Member Exists"


def test_put_for_a_new_member_must_match_the_hash(api, list_id):
    response = api(
        "PUT",
        f"lists/{list_id}/members/{md5('a@mailbox.shop')}",
        {"email_address": "b@mailbox.shop", "status_if_new": "subscribed"},
    )
    assert response.status_code == 400


def test_permanently_deleted_addresses_cannot_come_back(api, list_id):
    put(api, list_id, "forget@mailbox.shop", status_if_new="subscribed")
    assert (
        api(
            "POST", f"lists/{list_id}/members/{md5('forget@mailbox.shop')}/actions/delete-permanent"
        ).status_code
        == 204
    )
    response = put(api, list_id, "forget@mailbox.shop", status_if_new="subscribed")
    assert response.json()["title"] == "Forgotten Email Not Subscribed"


def test_create_with_post_refuses_existing_members(api, list_id):
    body = {"email_address": "p@mailbox.shop", "status": "subscribed", "tags": ["Customer"]}
    created = api("POST", f"lists/{list_id}/members", body)
    assert created.status_code == 200 and created.json()["tags"][0]["name"] == "Customer"
    assert api("POST", f"lists/{list_id}/members", body).json()["title"] == "Member Exists"


# -- merge fields and tags ----------------------------------------------------------


@pytest.mark.parametrize(
    ("merge_fields", "field"),
    [
        ({"NOPE": "x"}, "NOPE"),
        ({"ADDRESS": {"addr1": "1 Main St"}}, "ADDRESS"),
        ({"FNAME": True}, "FNAME"),
    ],
)
def test_merge_fields_are_checked_against_the_audience(api, list_id, emulator, merge_fields, field):
    response = put(
        api, list_id, "mf@mailbox.shop", status_if_new="subscribed", merge_fields=merge_fields
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Your merge fields were invalid."
    assert response.json()["errors"][0]["field"] == field
    assert emulator.state.members(list_id) == {}


def test_merge_fields_can_be_listed_and_added(api, list_id):
    tags = [f["tag"] for f in api("GET", f"lists/{list_id}/merge-fields").json()["merge_fields"]]
    assert tags == ["FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY"]
    created = api(
        "POST",
        f"lists/{list_id}/merge-fields",
        {"name": "Store credit", "type": "number", "tag": "CREDIT"},
    )
    assert created.status_code == 200
    assert (
        put(
            api,
            list_id,
            "c@mailbox.shop",
            status_if_new="subscribed",
            merge_fields={"CREDIT": 12.5},
        ).status_code
        == 200
    )
    assert (
        api("POST", f"lists/{list_id}/merge-fields", {"name": "X", "type": "colour"}).status_code
        == 400
    )


def test_tags_are_added_and_removed(api, list_id, emulator):
    put(api, list_id, "t@mailbox.shop", status_if_new="subscribed")
    path = f"lists/{list_id}/members/{md5('t@mailbox.shop')}/tags"
    body = {
        "tags": [
            {"name": "Consignor", "status": "active"},
            {"name": "Customer", "status": "active"},
        ]
    }
    assert api("POST", path, body).status_code == 204
    assert (
        api("POST", path, {"tags": [{"name": "Consignor", "status": "inactive"}]}).status_code
        == 204
    )
    assert emulator.state.member(list_id, "t@mailbox.shop").tags == ["Customer"]
    assert api("POST", path, {"tags": [{"name": "X", "status": "on"}]}).status_code == 400
    assert (
        api("POST", f"lists/{list_id}/members/{md5('nobody@mailbox.shop')}/tags", body).status_code
        == 404
    )


# -- batch subscribe ----------------------------------------------------------------


def batch(count, status="subscribed", start=0):
    return [
        {"email_address": f"b{n}@mailbox.shop", "status": status}
        for n in range(start, start + count)
    ]


def test_batch_of_501_members_is_refused_and_500_accepted(api, list_id, emulator):
    refused = api("POST", f"lists/{list_id}", {"members": batch(501)})
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "members"
    assert emulator.state.members(list_id) == {}
    accepted = api("POST", f"lists/{list_id}", {"members": batch(500)}).json()
    assert (accepted["total_created"], accepted["error_count"]) == (500, 0)
    assert len(emulator.state.members(list_id)) == 500


def test_batch_reports_errors_per_member_and_adds_the_rest(api, list_id, emulator):
    emulator.state.add_member(list_id, "b0@mailbox.shop", "unsubscribed")
    members = [*batch(3), {"email_address": "x@example.com", "status": "subscribed"}]
    result = api("POST", f"lists/{list_id}", {"members": members}).json()
    assert result["total_created"] == 2 and result["total_updated"] == 0
    codes = {e["email_address"]: e["error_code"] for e in result["errors"]}
    assert codes == {"b0@mailbox.shop": "ERROR_CONTACT_EXISTS", "x@example.com": "ERROR_GENERIC"}
    assert emulator.state.member(list_id, "b0@mailbox.shop").status == "unsubscribed"


def test_batch_update_existing_changes_status_but_not_past_compliance(api, list_id, emulator):
    """The pitfall FACTS.md warns of: update_existing rewrites existing members' status."""
    emulator.state.add_member(list_id, "b0@mailbox.shop", "pending")
    emulator.state.add_member(list_id, "b1@mailbox.shop", "unsubscribed")
    result = api("POST", f"lists/{list_id}", {"members": batch(2), "update_existing": True}).json()
    assert result["total_updated"] == 1 and result["error_count"] == 1
    assert "compliance state" in result["errors"][0]["error"]
    assert emulator.state.member(list_id, "b0@mailbox.shop").status == "subscribed"
    assert emulator.state.member(list_id, "b1@mailbox.shop").status == "unsubscribed"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"members": "everyone"},
        {"members": [{"email_address": "a@mailbox.shop"}]},  # status is required
        {"members": [{"email_address": "a@mailbox.shop", "status": "archived"}]},
        {"members": [], "update_existing": "yes"},
    ],
)
def test_malformed_batches_are_400(api, list_id, body):
    assert api("POST", f"lists/{list_id}", body).status_code == 400


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_bodies_that_are_not_json_objects_are_400(api, list_id, raw):
    response = requests.post(api.base + f"lists/{list_id}", data=raw, auth=api.auth, timeout=5)
    assert (
        response.status_code == 400
        and response.headers["Content-Type"] == "application/problem+json"
    )


# -- listing members ----------------------------------------------------------------


def test_members_by_status_since_and_page(api, list_id, emulator):
    for n in range(12):
        emulator.state.add_member(list_id, f"m{n}@mailbox.shop", "subscribed")
    for member in emulator.state.members(list_id).values():
        member.last_changed -= timedelta(hours=1)
    cutoff = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    emulator.state.set_status(list_id, "m3@mailbox.shop", "unsubscribed")
    emulator.state.set_status(list_id, "m4@mailbox.shop", "cleaned")

    assert api("GET", f"lists/{list_id}/members").json()["total_items"] == 12
    assert len(api("GET", f"lists/{list_id}/members").json()["members"]) == 10  # default page
    page = api("GET", f"lists/{list_id}/members", count=5, offset=10).json()
    assert len(page["members"]) == 2
    changed = api("GET", f"lists/{list_id}/members", since_last_changed=cutoff).json()
    assert {m["email_address"] for m in changed["members"]} == {
        "m3@mailbox.shop",
        "m4@mailbox.shop",
    }
    unsub = api(
        "GET", f"lists/{list_id}/members", status="unsubscribed", since_last_changed=cutoff
    ).json()
    assert [m["email_address"] for m in unsub["members"]] == ["m3@mailbox.shop"]
    assert api("GET", f"lists/{list_id}/members", since_last_changed="yesterday").status_code == 400
    assert api("GET", f"lists/{list_id}/members", status="gone").status_code == 400


@pytest.mark.parametrize("listed", [False, True])
def test_archived_members_in_the_unfiltered_list_is_a_switch(api, list_id, emulator, listed):
    """Mailchimp's docs leave open whether a list without ``status`` shows archived members."""
    emulator.state.add_member(list_id, "kept@mailbox.shop")
    emulator.state.add_member(list_id, "gone@mailbox.shop")
    assert api("DELETE", f"lists/{list_id}/members/{md5('gone@mailbox.shop')}").status_code == 204
    control = f"{emulator.url}/_emulator/state"
    assert requests.get(control, timeout=5).json()["archived_in_unfiltered_list"] is False
    answer = requests.post(control, json={"archived_in_unfiltered_list": listed}, timeout=5)
    assert answer.json() == {"archived_in_unfiltered_list": listed}
    assert emulator.state.archived_in_unfiltered_list is listed

    page = api("GET", f"lists/{list_id}/members").json()
    expected = {"kept@mailbox.shop": "subscribed"}
    if listed:
        expected["gone@mailbox.shop"] = "archived"
    assert {m["email_address"]: m["status"] for m in page["members"]} == expected
    assert page["total_items"] == len(expected)
    archived = api("GET", f"lists/{list_id}/members", status="archived").json()["members"]
    assert [m["email_address"] for m in archived] == ["gone@mailbox.shop"]  # either way
    for refused in ({"archived_in_unfiltered_list": "yes"}, {"latency": 1}, ["x"]):
        assert requests.post(control, json=refused, timeout=5).status_code == 400
    assert emulator.state.archived_in_unfiltered_list is listed


# -- webhooks -----------------------------------------------------------------------


def test_webhooks_are_registered_listed_and_removed(api, list_id):
    body = {
        "url": "https://shop.marigold.example/mailchimp/webhook/s3cret",
        "events": {"unsubscribe": True, "cleaned": True, "upemail": True, "profile": True},
        "sources": {"user": True, "admin": True, "api": False},
    }
    created = api("POST", f"lists/{list_id}/webhooks", body).json()
    assert created["events"]["unsubscribe"] and not created["events"]["subscribe"]
    assert created["sources"] == {"user": True, "admin": True, "api": False}
    assert api("POST", f"lists/{list_id}/webhooks", body).status_code == 400  # same URL twice
    assert api("GET", f"lists/{list_id}/webhooks").json()["total_items"] == 1
    assert api("DELETE", f"lists/{list_id}/webhooks/{created['id']}").status_code == 204
    assert api("GET", f"lists/{list_id}/webhooks").json()["total_items"] == 0
    assert api("POST", f"lists/{list_id}/webhooks", {"url": "ftp://x"}).status_code == 400


# -- faults and limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "has_body"),
    [
        ("429", 429, True),
        ("429-bare", 429, False),
        ("403-bare", 403, False),
        ("500", 500, True),
        ("503-bare", 503, False),
    ],
)
def test_error_faults(api, emulator, kind, status, has_body):
    emulator.faults.fail_next(2, kind)
    for _ in range(2):
        response = api("GET", "ping")
        assert response.status_code == status
        assert bool(response.content) is has_body
    assert api("GET", "ping").status_code == 200


def test_dropped_connections(api, emulator):
    emulator.faults.fail_next(1, "drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        api("GET", "ping")
    assert api("GET", "ping").status_code == 200


def test_a_timed_out_request_is_still_carried_out(api, list_id, emulator):
    emulator.faults.hang_seconds = 0.6
    emulator.faults.fail_next(1, "timeout")
    with pytest.raises(requests.exceptions.ReadTimeout):
        api(
            "PUT",
            f"lists/{list_id}/members/{md5('slow@mailbox.shop')}",
            {"email_address": "slow@mailbox.shop", "status_if_new": "subscribed"},
            timeout=0.2,
        )
    deadline = time.time() + 10  # the wait ends when it lands (0.6 s), however loaded
    while emulator.state.member(list_id, "slow@mailbox.shop") is None and time.time() < deadline:
        time.sleep(0.05)
    assert emulator.state.member(list_id, "slow@mailbox.shop").status == "subscribed"


def test_latency_is_added_to_every_request(api, emulator):
    emulator.faults.latency = 0.3
    started = time.perf_counter()
    api("GET", "ping")
    assert time.perf_counter() - started >= 0.3


def test_random_error_rate_is_reproducible_with_a_seed(api, emulator):
    emulator.faults.configure(error_rate=0.5, seed=7, random_kinds=["500"])
    first = [api("GET", "ping").status_code for _ in range(20)]
    emulator.faults.configure(seed=7)
    assert [api("GET", "ping").status_code for _ in range(20)] == first
    assert set(first) == {200, 500}


def test_unknown_fault_kinds_are_refused(emulator):
    with pytest.raises(ValueError, match="Unknown fault"):
        emulator.faults.fail_next(1, "teapot")
    assert set(FAULT_KINDS) >= {"429", "429-bare", "500", "timeout", "drop"}


def test_no_more_than_ten_simultaneous_connections_per_account(api, emulator, mailchimp_account):
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(api("GET", "ping").status_code))
        for _ in range(13)
    ]
    connections, key = emulator.state.connections, mailchimp_account.api_key
    # Every answer waits for the state's lock: the admitted keep their connection until
    # all 13 have come in (on a loaded machine the last thread may start late, after a
    # fixed latency let the first ones go and free their slots).
    with emulator.state.lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while connections.open[key] + connections.refused[key] < 13:
            assert time.monotonic() < deadline, "the 13 requests never all came in"
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 10 and statuses.count(429) == 3


def test_the_request_log_records_what_was_sent(api, list_id, emulator):
    put(api, list_id, "log@mailbox.shop", status_if_new="subscribed")
    entry = emulator.state.requests[-1]
    assert (
        entry["method"] == "PUT"
        and entry["path"] == f"/lists/{list_id}/members/{md5('log@mailbox.shop')}"
    )
    assert entry["body"] == {"email_address": "log@mailbox.shop", "status_if_new": "subscribed"}
    assert entry["status"] == 200
    assert emulator.state.write_requests() == [entry]


# -- as a separate process ----------------------------------------------------------


def test_runs_as_a_process_with_control_endpoints():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask_mailchimp_sync.testing.emulator",
            "--audience",
            "Customers",
            "--latency",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(process.stdout.readline())
        auth = ("x", info["api_key"])
        list_id = info["audiences"]["Customers"]
        assert requests.get(info["api_url"] + "ping", auth=auth, timeout=5).status_code == 200
        requests.put(
            info["api_url"] + f"lists/{list_id}/members/{md5('p@mailbox.shop')}",
            json={"email_address": "p@mailbox.shop", "status_if_new": "subscribed"},
            auth=auth,
            timeout=5,
        )
        control = info["api_url"].replace("/3.0/", "/_emulator/")
        state = requests.get(control + "state", timeout=5).json()
        assert state["audiences"][0]["stats"]["member_count"] == 1 and state["write_requests"] == 1
        members = requests.get(control + f"lists/{list_id}/members", timeout=5).json()
        assert [m["email_address"] for m in members] == ["p@mailbox.shop"]
        assert requests.post(
            control + "faults", json={"fail_next": {"count": 1, "kind": "500"}}, timeout=5
        ).ok
        assert requests.get(info["api_url"] + "ping", auth=auth, timeout=5).status_code == 500
        assert (
            requests.post(
                control + "faults", json={"random_kinds": ["teapot"]}, timeout=5
            ).status_code
            == 400
        )
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()


@pytest.mark.parametrize(
    ("kind", "options", "value", "message"),
    [
        ("number", {}, 40.5, None),
        ("number", {}, "12", None),
        ("number", {}, "lots", "Please enter a number"),
        ("date", {}, "2026-03-14", None),
        ("date", {"date_format": "MM/DD/YYYY"}, "03/14/2026", None),
        ("date", {"date_format": "DD/MM/YYYY"}, "14/03/2026", None),
        ("date", {}, "14/03/2026", "Please enter the date"),
        ("date", {}, "soon", "Please enter the date"),
        ("birthday", {}, "03/14", None),
        ("birthday", {}, "2026-03-14", "Please enter a month (01-12) and a day (01-31)"),
        ("birthday", {"date_format": "DD/MM"}, "14/03", None),
        ("zip", {}, "30301", None),
        ("zip", {}, "SW1A 1AA", "Please enter a valid zip code"),
        ("phone", {}, "+44 20 7946 0000", None),
        ("phone", {"phone_format": "US"}, "(404) 555-0101", None),
        ("phone", {"phone_format": "US"}, "555-0101", "Please enter a valid phone number"),
        ("url", {}, "https://marigold.shop/items", None),
        ("url", {}, "not a url", "Please enter a valid URL"),
        ("text", {}, True, "Data did not match any of the schemas described in anyOf."),
        ("number", {}, "", None),  # an empty value clears the field
    ],
)
def test_merge_field_values_are_checked_by_type_as_mailchimp_does(
    api, list_id, emulator, kind, options, value, message
):
    created = api(
        "POST",
        f"lists/{list_id}/merge-fields",
        {"tag": "FIELD", "name": "A field", "type": kind, "options": options},
    )
    assert created.status_code == 200 and created.json()["type"] == kind
    response = put(
        api,
        list_id,
        "typed@mailbox.shop",
        status_if_new="subscribed",
        merge_fields={"FIELD": value},
    )
    if message is None:
        assert response.status_code == 200, response.json()
        assert emulator.state.member(list_id, "typed@mailbox.shop").merge_fields["FIELD"] == value
    else:
        assert response.status_code == 400
        assert response.json()["detail"] == "Your merge fields were invalid."
        assert response.json()["errors"] == [{"field": "FIELD", "message": message}]
        assert emulator.state.members(list_id) == {}


def test_a_batch_subscribe_names_the_refused_field(api, list_id, emulator):
    api(
        "POST",
        f"lists/{list_id}/merge-fields",
        {"tag": "CREDIT", "name": "Credit", "type": "number"},
    )
    body = {
        "members": [
            {
                "email_address": "a@mailbox.shop",
                "status": "subscribed",
                "merge_fields": {"CREDIT": 3},
            },
            {
                "email_address": "b@mailbox.shop",
                "status": "subscribed",
                "merge_fields": {"CREDIT": "x"},
            },
        ],
        "update_existing": False,
    }
    result = api("POST", f"lists/{list_id}", body).json()
    assert [m["email_address"] for m in result["new_members"]] == ["a@mailbox.shop"]
    (error,) = result["errors"]
    assert (error["field"], error["field_message"]) == ("CREDIT", "Please enter a number")
