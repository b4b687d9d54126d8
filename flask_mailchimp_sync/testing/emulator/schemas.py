"""The request bodies the emulator accepts, checked the way Mailchimp checks them.

A small validator for the part of JSON Schema these bodies need (type, required,
enum, maxItems, maxLength, nested objects and arrays). Messages follow Mailchimp's
wording, and the schemas follow its published spec (3.0.55) plus the rules the real
API enforces beyond it (batch members need ``email_address`` and ``status``).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}

STATUSES = ["subscribed", "unsubscribed", "cleaned", "pending", "transactional"]

_LOCATION: Schema = {
    "type": "object",
    "properties": {"latitude": {"type": "number"}, "longitude": {"type": "number"}},
}

_MEMBER_FIELDS: dict[str, Schema] = {
    "email_address": {"type": "string", "maxLength": 254},
    "email_type": {"type": "string", "enum": ["html", "text"]},
    "status": {"type": "string", "enum": STATUSES},
    "merge_fields": {"type": "object"},
    "interests": {"type": "object"},
    "language": {"type": "string"},
    "vip": {"type": "boolean"},
    "location": _LOCATION,
    "ip_signup": {"type": "string"},
    "timestamp_signup": {"type": "string"},
    "ip_opt": {"type": "string"},
    "timestamp_opt": {"type": "string"},
}

#: POST /lists/{id}/members
MEMBER_CREATE: Schema = {
    "type": "object",
    "required": ["email_address", "status"],
    "properties": {
        **_MEMBER_FIELDS,
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
    },
}

#: PUT /lists/{id}/members/{hash}
MEMBER_PUT: Schema = {
    "type": "object",
    "required": ["email_address", "status_if_new"],
    "properties": {**_MEMBER_FIELDS, "status_if_new": {"type": "string", "enum": STATUSES}},
}

#: PATCH /lists/{id}/members/{hash}
MEMBER_PATCH: Schema = {
    "type": "object",
    "properties": {
        **_MEMBER_FIELDS,
        "status": {"type": "string", "enum": [s for s in STATUSES if s != "transactional"]},
    },
}

#: Most members one batch subscribe request may carry.
BATCH_LIMIT = 500

#: POST /lists/{id}
BATCH_SUBSCRIBE: Schema = {
    "type": "object",
    "required": ["members"],
    "properties": {
        "members": {
            "type": "array",
            "maxItems": BATCH_LIMIT,
            "items": {
                "type": "object",
                "required": ["email_address", "status"],
                # Tags in batch members: Mailchimp's release note of 2022-01-24 (with
                # sync_tags); the published 3.0.55 schema predates it.
                "properties": {
                    **_MEMBER_FIELDS,
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
                },
            },
        },
        "sync_tags": {"type": "boolean"},
        "update_existing": {"type": "boolean"},
    },
}

#: POST /lists/{id}/members/{hash}/tags
MEMBER_TAGS: Schema = {
    "type": "object",
    "required": ["tags"],
    "properties": {
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "status"],
                "properties": {
                    "name": {"type": "string", "maxLength": 100},
                    "status": {"type": "string", "enum": ["active", "inactive"]},
                },
            },
        },
        "is_syncing": {"type": "boolean"},
    },
}

_FLAGS = ["subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign"]

#: POST /lists/{id}/webhooks
WEBHOOK_CREATE: Schema = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "maxLength": 2048},
        "events": {"type": "object", "properties": {k: {"type": "boolean"} for k in _FLAGS}},
        "sources": {
            "type": "object",
            "properties": {k: {"type": "boolean"} for k in ("user", "admin", "api")},
        },
    },
}

MERGE_FIELD_TYPES = [
    "text", "number", "address", "phone", "date", "url",
    "imageurl", "radio", "dropdown", "birthday", "zip",
]  # fmt: skip

#: POST /lists/{id}/merge-fields
MERGE_FIELD_CREATE: Schema = {
    "type": "object",
    "required": ["name", "type"],
    "properties": {
        "tag": {"type": "string", "maxLength": 10},
        "name": {"type": "string", "maxLength": 50},
        "type": {"type": "string", "enum": MERGE_FIELD_TYPES},
        "required": {"type": "boolean"},
        "default_value": {"type": "string"},
        "public": {"type": "boolean"},
        "display_order": {"type": "integer"},
        "options": {"type": "object"},
        "help_text": {"type": "string"},
    },
}


def validate(value: Any, schema: Schema, path: str = "") -> list[dict[str, str]]:
    """Every way *value* breaks *schema*, as Mailchimp's ``errors`` entries."""
    expected = schema.get("type")
    if expected and not _is_type(value, expected):
        found = _type_name(value)
        return [_error(path, f"Schema describes {expected}, {found} found instead")]
    errors: list[dict[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(_error(path, f"Schema describes enum, {value!r} found instead"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(_error(path, f"String is longer than {schema['maxLength']} characters"))
    if expected == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                _error(
                    path,
                    f"Schema describes array with at most {schema['maxItems']} items, "
                    f"{len(value)} found instead",
                )
            )
        for index, item in enumerate(value):
            errors += validate(item, schema.get("items", {}), f"{path}.item:{index}")
    if expected == "object":
        for name in schema.get("required", []):
            if value.get(name) in (None, ""):
                errors.append(_error(_join(path, name), "This value should not be blank."))
        for name, sub_schema in schema.get("properties", {}).items():
            if value.get(name) is not None:
                errors += validate(value[name], sub_schema, _join(path, name))
    return errors


def _is_type(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _PY_TYPES[expected])


def _type_name(value: Any) -> str:
    for name in _PY_TYPES:
        if _is_type(value, name):
            return name
    return "null" if value is None else type(value).__name__


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


#: POST /batches: many operations in one request, carried out asynchronously.
BATCH_OPERATIONS: Schema = {
    "type": "object",
    "required": ["operations"],
    "properties": {
        "operations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["method", "path"],
                "properties": {
                    "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                    "path": {"type": "string"},
                    "params": {"type": "object"},
                    "body": {"type": "string"},
                    "operation_id": {"type": "string"},
                },
            },
        }
    },
}
