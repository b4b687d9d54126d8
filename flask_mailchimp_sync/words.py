"""What the staff pages say: plain words for runs, phases, next steps and contacts.

Records keep short machine words (``running``, ``reading a1b2c3 1500``); the pages
show sentences a shop owner follows, with audiences named rather than numbered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extension import MailchimpSync

STATES = {
    "queued": "Waiting to start",
    "running": "In progress",
    "done": "Finished",
    "failed": "Failed",
}

#: Phases whose progress counts addresses (the bar shows a percentage only then).
COUNTED_PHASES = ("sending", "previewing")

PHASES = {
    "preparing": "Reading the shop's contacts",
    "sending": "Sending changes to Mailchimp",
    "previewing": "Working out what a sync would change",
}

#: What a run or delivery counted, as the page names it.
OUTCOME_WORDS = {
    "added": "added",
    "updated": "updated",
    "archived": "archived",
    "unchanged": "unchanged",
    "not_opted_in": "not opted in",
    "blocked": "blocked (unsubscribed in Mailchimp)",
    "skipped": "skipped",
    "failed": "failed",
}

#: Marks a retry in a run's phase: ``<phase>|retry <epoch second it is retried at>``.
RETRY_MARK = "|retry "


def audience_names(extension: MailchimpSync) -> dict[str, str]:
    """Audience id -> the name saved with it (the id itself when none was saved)."""
    settings = extension.settings_store().get()
    if settings is None:
        return {}
    return {a.audience_id: a.audience_name or a.audience_id for a in settings.audiences}


def audiences_of(run: Any, names: dict[str, str]) -> str:
    """The audiences a run covered, by name."""
    ids = [i for i in (run.audiences or "").split(",") if i]
    return ", ".join(names.get(i, f"audience {i}") for i in ids)


def state_text(run: Any) -> str:
    text = STATES.get(run.state, run.state)
    if run.state == "done" and getattr(run, "dry_run", False):
        return "Finished (a preview: nothing was sent)"
    return text


def base_phase(phase: str | None) -> str:
    """The phase without its retry mark."""
    return (phase or "").split(RETRY_MARK)[0]


def phase_text(run: Any, names: dict[str, str]) -> str:
    """What a running run is doing now; empty once it ended."""
    if run.state in ("done", "failed"):
        return ""
    if run.state == "queued":
        return "Waiting for the worker to start it"
    phase = base_phase(run.phase)
    words = phase.split()
    if words[:1] == ["reading"] and len(words) in (2, 3):
        name = names.get(words[1], words[1])
        if len(words) == 3 and words[2].isdigit():
            return f"Reading members from Mailchimp ({name}): {int(words[2]):,} read so far"
        return f"Reading members from Mailchimp ({name})"
    return PHASES.get(phase, phase)


def retry_text(run: Any, now: float | None = None) -> str:
    """ "Mailchimp is busy, retrying in 4 s" while a retry waits; else empty."""
    phase = run.phase or ""
    if run.state != "running" or RETRY_MARK not in phase:
        return ""
    try:
        at = float(phase.split(RETRY_MARK)[1])
    except ValueError:
        return ""
    left = at - (time.time() if now is None else now)
    if left < 0:
        return ""
    return f"Mailchimp is busy, retrying in {max(1, round(left))} s"


def retry_phase(phase: str | None, delay: float, limit: int = 64) -> str:
    """*phase* marked as waiting *delay* seconds for a retry (fits a column of *limit*)."""
    base = (phase or "").split(RETRY_MARK)[0]
    mark = f"{RETRY_MARK}{time.time() + delay:.0f}"
    return base[: limit - len(mark)] + mark


def mailchimp_text(reason: str | None) -> str:
    """Mailchimp's own error text, made readable: whose support, one full stop."""
    text = re.sub(r"\.{2,}(\s|$)", r".\1", reason or "").strip()
    return re.sub(r"\bcontact Support\b", "contact Mailchimp Support", text, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    number: int  # 1 to 4; 5 once everything is set up
    title: str
    text: str


STEP_TITLES = ("Connect", "Choose audiences", "Preview", "First Sync")


def next_step(settings: Any, connected: bool, runs: Sequence[Any]) -> Step:
    """Where staff are in Connect → choose audiences → Preview → first Sync."""
    if not connected:
        return Step(1, "Connect", "Paste your Mailchimp API key below and press Connect.")
    if not settings.audiences:
        return Step(
            2,
            "Choose audiences",
            "Choose the audience your contacts go to, then press Save settings. "
            "Nothing is sent yet.",
        )
    if not any(a.first_synced_at is None for a in settings.audiences):
        return Step(
            5,
            "All set",
            "Changes reach Mailchimp by themselves"
            + (" as they happen." if settings.realtime else " at each Sync.")
            + " Press Sync whenever you want everything checked again.",
        )
    if not any(r.dry_run and r.state == "done" for r in runs):
        return Step(
            3,
            "Preview",
            "Press Preview to see what the first Sync would do. Nothing is sent to Mailchimp.",
        )
    return Step(
        4,
        "First Sync",
        "Press Sync to send your contacts. Real-time updates start after the first Sync.",
    )


def contacts(extension: MailchimpSync, items: Iterable[Any]) -> dict[int, tuple[str, str | None]]:
    """Item id -> (the contact's name, the URL of its page in the shop or ``None``)."""
    sources = {source.name: source for source in extension.sources}
    session: Any = extension.db.session
    named: dict[int, tuple[str, str | None]] = {}
    for item in items:
        source = sources.get(item.source or "")
        label, url = (None, None)
        if source is not None and item.contact_key is not None:
            label, url = source.describe(session, item.contact_key)
        role = source.role.replace("_", " ") if source is not None else "contact"
        named[item.id] = (label or f"{role} {item.contact_key or ''}".strip(), url)
    return named
