"""Helpers shared by the tests."""

from __future__ import annotations

import re
from typing import Any

#: Every request body the plugin sent to an emulator during this test run; the spec
#: conformance test (which runs last) holds each against Mailchimp's published schemas.
PLUGIN_REQUESTS: list[dict[str, Any]] = []


def csrf_token(html: str) -> str:
    """The CSRF token of the (first) form on a page."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "the page has no CSRF token"
    return match.group(1)
