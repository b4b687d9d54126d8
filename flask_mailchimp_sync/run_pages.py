"""The run history: every Sync and Preview, each run's contacts, and its progress."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import abort, current_app, jsonify, render_template, request

from . import words
from ._state import get_extension
from .engine import retention
from .engine.members import LISTED, OUTCOMES
from .pages import MAX_ID, blueprint

if TYPE_CHECKING:
    from .extension import MailchimpSync


@blueprint.get("/runs")
def runs_page() -> Any:
    extension = get_extension()
    SyncRun = extension.models.SyncRun
    page = _paginate(extension, sa.select(SyncRun).order_by(SyncRun.id.desc()), per_page=25)
    return render_template(
        "mailchimp_sync/runs.html", page=page, names=words.audience_names(extension)
    )


@blueprint.get("/runs/<int:run_id>")
def run_page(run_id: int) -> Any:
    extension = get_extension()
    run = _run_or_404(extension, run_id)
    outcome = request.args.get("outcome")
    Item = extension.models.SyncRunItem
    items = sa.select(Item).where(Item.run_id == run.id).order_by(Item.id)
    if outcome in LISTED:
        items = items.where(Item.outcome == outcome)
    page = _paginate(extension, items, per_page=100)
    kept = retention.lists_kept(current_app.config)
    oldest = retention.oldest_listed_run(extension.db.session, extension.models, run.store, kept)
    return render_template(
        "mailchimp_sync/run.html",
        run=run,
        list_gone=run.id < oldest and not page.items,
        lists_kept=kept,
        summary=run_summary(run),
        items=page,
        contacts=words.contacts(extension, page.items),
        outcome=outcome,
    )


@blueprint.get("/runs/<int:run_id>.json")
def run_progress(run_id: int) -> Any:
    """What the run page polls while a run goes on."""
    return jsonify(run_summary(_run_or_404(get_extension(), run_id)))


def _run_or_404(extension: MailchimpSync, run_id: int) -> Any:
    # Larger numbers are no run's id, and the database would refuse them (a 500).
    if not 0 < run_id <= MAX_ID:
        abort(404)
    return extension.db.session.get(extension.models.SyncRun, run_id) or abort(404)


def _paginate(extension: MailchimpSync, query: Any, per_page: int) -> Any:
    """The page of *query* that ``?page=`` asks for; a page that cannot exist is a 404."""
    try:
        number = int(request.args.get("page", 1))
    except ValueError:
        abort(404)
    if not 0 < number <= MAX_ID // per_page:  # its offset would overflow the database's
        abort(404)
    return extension.db.paginate(query, page=number, per_page=per_page)


def run_summary(run: Any) -> dict[str, Any]:
    """A run's progress, in numbers for scripts and in words for the page."""
    names = words.audience_names(get_extension())
    moving = run.state == "running" and words.base_phase(run.phase) in words.COUNTED_PHASES
    return {
        "id": run.id,
        "state": run.state,
        "state_text": words.state_text(run),
        "phase": run.phase,
        "phase_text": words.phase_text(run, names),
        "retry_text": words.retry_text(run),
        "dry_run": run.dry_run,
        "processed": run.processed,
        "total": run.total,
        # None while the total is not known yet: the bar then moves without a number.
        "percent": 100
        if run.state == "done"
        else (100 * run.processed // run.total if moving and run.total else None),
        "counts": {name: getattr(run, name) for name in OUTCOMES},
        "error": run.error,
        "notes": run.notes,
    }
