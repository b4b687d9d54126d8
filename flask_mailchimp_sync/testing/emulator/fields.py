"""Mailchimp's ``fields`` / ``exclude_fields`` query parameters (dot notation)."""

from __future__ import annotations

from typing import Any


def filter_fields(body: Any, fields: str | None, exclude: str | None) -> Any:
    if fields:
        body = _keep(body, _tree(fields))
    if exclude:
        body = _drop(body, _tree(exclude))
    return body


def _tree(paths: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in filter(None, (p.strip() for p in paths.split(","))):
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def _keep(value: Any, tree: dict[str, Any]) -> Any:
    if not tree:
        return value
    if isinstance(value, list):
        return [_keep(item, tree) for item in value]
    if isinstance(value, dict):
        return {k: _keep(v, tree[k]) for k, v in value.items() if k in tree}
    return value


def _drop(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_drop(item, tree) for item in value]
    if isinstance(value, dict):
        return {
            k: _drop(v, tree[k]) if tree.get(k) else v
            for k, v in value.items()
            if k not in tree or tree[k]
        }
    return value
