"""Request bodies held against Mailchimp's published OpenAPI spec (3.0.55).

The spec lives beside the project (in ``shared/mailchimp``), never inside it: where it
is absent these tests skip and say so.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from flask_mailchimp_sync.testing.emulator import schemas

from .helpers import PLUGIN_REQUESTS

SPEC_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "mailchimp"
    / "marketing-api-3.0.55.openapi.yaml"
)

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.exists(), reason=f"Mailchimp's OpenAPI spec is not at {SPEC_PATH}"
)


@cache
def spec() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _apply_errata(yaml.load(SPEC_PATH.read_text(), Loader=loader))


def _apply_errata(document: dict[str, Any]) -> dict[str, Any]:
    """Correct the one known error of the published spec that these bodies meet.

    The spec says every merge field value is an object, while its own description says
    the values are "the values to be added to the merge field": FNAME is a string, a
    number field a number, only ADDRESS an object. Every Mailchimp example sends strings.
    """
    for schema in document["components"]["schemas"].values():
        merge_fields = schema.get("properties", {}).get("merge_fields", {})
        if merge_fields.get("additionalProperties", {}).get("type") == "object":
            del merge_fields["additionalProperties"]
    return document


@cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    found = []
    for template, item in spec()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if isinstance(operation, dict) and body:
                found.append((pattern, method.upper(), body["schema"]))
    # most specific (longest) templates first, so /lists/{id} doesn't swallow /lists/{id}/x
    return sorted(found, key=lambda op: -len(op[0].pattern))


def spec_schema(method: str, path: str) -> dict[str, Any]:
    for pattern, op_method, schema in _operations():
        if op_method == method and pattern.match(path):
            return schema
    raise AssertionError(f"the spec has no request body for {method} {path}")


def spec_problems(method: str, path: str, body: Any) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    resource = referencing.Resource.from_contents(
        spec(), default_specification=referencing.jsonschema.DRAFT4
    )
    registry = referencing.Registry().with_resource("spec", resource)
    validator = jsonschema.Draft4Validator(
        {"$ref": "spec" + spec_schema(method, path)["$ref"]}, registry=registry
    )
    return [error.message for error in validator.iter_errors(body)]


# Bodies of every shape the emulator takes; each "accepted" one must satisfy the spec,
# so the emulator never lets through what Mailchimp's schema refuses.
SAMPLES = [
    (
        "PUT",
        "/lists/a1b2c3d4e5/members/x",
        schemas.MEMBER_PUT,
        {
            "email_address": "a@b.shop",
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": "A"},
        },
    ),
    (
        "PUT",
        "/lists/a1b2c3d4e5/members/x",
        schemas.MEMBER_PUT,
        {
            "email_address": "a@b.shop",
            "status_if_new": "pending",
            "status": "subscribed",
            "vip": True,
        },
    ),
    (
        "PUT",
        "/lists/a1b2c3d4e5/members/x",
        schemas.MEMBER_PUT,
        {"email_address": "a@b.shop", "status_if_new": "subscribed", "status": "archived"},
    ),
    (
        "PUT",
        "/lists/a1b2c3d4e5/members/x",
        schemas.MEMBER_PUT,
        {"email_address": 5, "status_if_new": "subscribed"},
    ),
    (
        "PATCH",
        "/lists/a1b2c3d4e5/members/x",
        schemas.MEMBER_PATCH,
        {"email_address": "n@b.shop", "merge_fields": {"LNAME": "B"}},
    ),
    ("PATCH", "/lists/a1b2c3d4e5/members/x", schemas.MEMBER_PATCH, {"status": "transactional"}),
    (
        "POST",
        "/lists/a1b2c3d4e5/members",
        schemas.MEMBER_CREATE,
        {"email_address": "a@b.shop", "status": "subscribed", "tags": ["Customer"]},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/members",
        schemas.MEMBER_CREATE,
        {"email_address": "a@b.shop", "status": "subscribed", "tags": "Customer"},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5",
        schemas.BATCH_SUBSCRIBE,
        {
            "members": [{"email_address": "a@b.shop", "status": "subscribed"}],
            "update_existing": False,
        },
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5",
        schemas.BATCH_SUBSCRIBE,
        {"members": [{"email_address": "a@b.shop", "status": "gone"}]},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5",
        schemas.BATCH_SUBSCRIBE,
        {"members": {"email_address": "a@b.shop"}},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/members/x/tags",
        schemas.MEMBER_TAGS,
        {"tags": [{"name": "Consignor", "status": "active"}]},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/members/x/tags",
        schemas.MEMBER_TAGS,
        {"tags": [{"name": "Consignor", "status": "on"}]},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/webhooks",
        schemas.WEBHOOK_CREATE,
        {"url": "https://s.shop/h", "events": {"unsubscribe": True}, "sources": {"api": False}},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/webhooks",
        schemas.WEBHOOK_CREATE,
        {"url": "https://s.shop/h", "events": {"unsubscribe": "yes"}},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/merge-fields",
        schemas.MERGE_FIELD_CREATE,
        {"name": "Credit", "type": "number"},
    ),
    (
        "POST",
        "/lists/a1b2c3d4e5/merge-fields",
        schemas.MERGE_FIELD_CREATE,
        {"name": "Credit", "type": "colour"},
    ),
]


#: The samples written to be valid (the others each break one rule).
VALID = {0, 1, 4, 6, 8, 11, 13, 15}


@pytest.mark.parametrize("number", range(len(SAMPLES)))
def test_the_emulator_checks_bodies_and_accepts_nothing_the_spec_refuses(number):
    method, path, emulator_schema, body = SAMPLES[number]
    accepted = not schemas.validate(body, emulator_schema)
    assert accepted is (number in VALID)
    if accepted:
        assert spec_problems(method, path, body) == []


@pytest.mark.after_all
def test_every_body_the_plugin_sent_matches_the_spec():
    if not PLUGIN_REQUESTS:
        pytest.skip("no request bodies were sent by the plugin in this run")
    problems = {
        f"{r['method']} {r['path']}": spec_problems(r["method"], r["path"], r["body"])
        for r in PLUGIN_REQUESTS
    }
    assert {request: found for request, found in problems.items() if found} == {}
