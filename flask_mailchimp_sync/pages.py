"""The extension's blueprint, and what every one of its pages shares: the host's
authorization check (closed when none is set), no framing by other sites, the layout,
and the words templates use.

Routes live in :mod:`.views` (the settings page) and :mod:`.run_pages` (run history).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from . import words
from ._state import get_extension
from .engine.members import LISTED, OUTCOMES
from .layout import template_context

blueprint = Blueprint("mailchimp_sync", __name__, template_folder="templates")

#: The largest id of the extension's tables on every database (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1


# Globals, not context: the templates' imported macros see them too.
@blueprint.app_template_global("mailchimp_sync_outcomes")
def outcomes() -> tuple[str, ...]:
    """Every outcome a run or delivery counts, in page order."""
    return OUTCOMES


@blueprint.app_template_global("mailchimp_sync_listed")
def listed_outcomes() -> tuple[str, ...]:
    """The outcomes listed contact by contact."""
    return LISTED


@blueprint.app_template_global("mailchimp_sync_state")
def state_words(run: Any) -> str:
    """A run's state in plain words ("In progress", "Failed")."""
    return words.state_text(run)


@blueprint.app_template_global("mailchimp_sync_outcome_word")
def outcome_word(name: str) -> str:
    return words.OUTCOME_WORDS.get(name, name.replace("_", " "))


@blueprint.app_template_global("mailchimp_sync_audiences_of")
def audiences_of(run: Any, names: dict[str, str]) -> str:
    return words.audiences_of(run, names)


@blueprint.app_template_filter("mailchimp_sync_text")
def mailchimp_text(reason: str | None) -> str:
    """Mailchimp's error text, readable (whose support; one full stop)."""
    return words.mailchimp_text(reason)


@blueprint.before_request
def check_access() -> Any:
    return get_extension().check_access()


@blueprint.after_request
def refuse_framing(response: Response) -> Response:
    """Pages that connect accounts and start syncs are never shown inside another site's
    frame (clickjacking), unless the host allows it; headers the host set stay."""
    ancestors = current_app.config["MAILCHIMP_SYNC_FRAME_ANCESTORS"]
    if ancestors:
        response.headers.setdefault("Content-Security-Policy", f"frame-ancestors {ancestors}")
        # The older header, for browsers without CSP, knows only these two.
        legacy = {"'none'": "DENY", "'self'": "SAMEORIGIN"}.get(ancestors)
        if legacy:
            response.headers.setdefault("X-Frame-Options", legacy)
    return response


@blueprint.context_processor
def layout() -> dict[str, Any]:
    return template_context(get_extension())
