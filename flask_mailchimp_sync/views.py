"""Preferences > Integrations > Mailchimp: the staff page.

Every view passes the host's authorization check first (closed when none is set).
Views call into :mod:`.connection` and the models; nothing below them imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm

from . import connection, fields
from ._state import get_extension, real_app
from .client import AudienceInfo
from .connection import AudienceChoice, default_tag
from .engine.members import LISTED, OUTCOMES
from .exceptions import ConnectionProblem, MailchimpSyncError, StoredKeyUnreadableError, SyncRefused
from .forms import (
    NOT_SYNCED,
    DailySyncForm,
    DisconnectForm,
    FieldsForm,
    RealtimeForm,
    SyncForm,
    WebhookForm,
    audiences_form,
    connect_form,
    role_field,
)
from .jobs import cron_line, dispatcher, redis_url, schedule_daily_sync, start_sync
from .layout import flash_message, template_context
from .realtime import outbox_summary, recent_deliveries, waiting_for_first_sync

if TYPE_CHECKING:
    from .extension import MailchimpSync

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


@blueprint.get("/")
def settings_page() -> Any:
    return _render()


@blueprint.post("/connect")
def connect() -> Any:
    extension = get_extension()
    form = connect_form(extension.roles)
    if form.validate_on_submit():
        choices = {
            role: AudienceChoice(form[role_field(n, "audience_id")].data or None)
            for n, role in enumerate(extension.roles)
        }
        try:
            settings = connection.connect(extension, form.api_key.data, choices)
        except ConnectionProblem as problem:
            extension.db.session.rollback()
            _field_for(form, extension, problem, "audience_id").errors.append(problem.message)
        else:
            extension.db.session.commit()
            flash_message(f"Connected to the Mailchimp account {settings.account_name}.", "success")
            _flash_if(connection.register_webhooks(extension))
            return redirect(url_for(".settings_page"))
    return _render(connect=form), 400


@blueprint.post("/audiences")
def audiences() -> Any:
    extension = get_extension()
    listed = _available_audiences(extension)
    form = audiences_form(extension.roles, listed[0], _saved_ids(extension))
    if form.validate_on_submit():
        choices = {}
        for n, role in enumerate(extension.roles):
            picked = form[role_field(n, "audience_id")].data or form[role_field(n, "audience")].data
            choices[role] = AudienceChoice(
                picked if picked != NOT_SYNCED else None, form[role_field(n, "tag")].data
            )
        try:
            settings = connection.choose_audiences(
                extension, choices, double_opt_in=bool(form.double_opt_in.data)
            )
            settings.profile_updates = bool(form.profile_updates.data)
        except ConnectionProblem as problem:
            extension.db.session.rollback()
            _field_for(form, extension, problem, "audience").errors.append(problem.message)
        else:
            extension.db.session.commit()
            flash_message("Audiences saved.", "success")
            _flash_if(connection.register_webhooks(extension))
            # Nothing is sent now: the staff's first Sync (after a Preview) comes first.
            return redirect(url_for(".settings_page"))
    return _render(audiences=form, listed=listed), 400


@blueprint.post("/disconnect")
def disconnect() -> Any:
    extension = get_extension()
    if not DisconnectForm().validate_on_submit():
        return _render(), 400
    left = connection.disconnect(extension)
    extension.db.session.commit()
    flash_message("Disconnected from Mailchimp; the API key is forgotten.", "success")
    _flash_if(left)
    return redirect(url_for(".settings_page"))


@blueprint.post("/sync")
def sync() -> Any:
    """Sync (or preview): queue a run and show its progress; never waits on Mailchimp."""
    extension = get_extension()
    form = SyncForm()
    if not form.validate_on_submit():
        return _render(), 400
    try:
        run = start_sync(extension, dry_run=bool(form.preview.data), trigger="button")
    except SyncRefused as refused:
        flash_message(str(refused), "warning")
        return redirect(url_for(".settings_page"))
    return redirect(url_for(".run_page", run_id=run.id))


@blueprint.post("/daily")
def daily_sync() -> Any:
    """Turn the daily Sync on (at an hour, UTC) or off."""
    extension = get_extension()
    form = DailySyncForm()
    settings = extension.settings_store().get()
    if settings is None or not form.validate_on_submit():
        return _render(), 400
    hour = int(form.daily_hour.data) if form.daily_hour.data else None
    settings.daily_sync_hour = hour
    extension.db.session.commit()
    try:
        scheduled = schedule_daily_sync(real_app(), hour)
    except Exception:  # Redis down: saved, and scheduled when saved again
        current_app.logger.exception("Could not schedule the daily Mailchimp sync")
        flash_message("Saved, but Redis is unreachable: save again once it is back.", "warning")
        return redirect(url_for(".settings_page"))
    if hour is None:
        flash_message("The daily Sync is off.", "success")
    elif scheduled:
        flash_message(f"A Sync runs every day at {hour:02d}:00 UTC.", "success")
    else:
        flash_message(
            "Saved. This shop runs jobs inside the web process, which keeps no timers: "
            f"add this line to the server's crontab (UTC): {cron_line(hour)}",
            "warning",
        )
    return redirect(url_for(".settings_page"))


@blueprint.post("/fields")
def create_fields() -> Any:
    """Create the declared merge fields the chosen audiences lack."""
    extension = get_extension()
    if not FieldsForm().validate_on_submit():
        return _render(), 400
    try:
        created = fields.create_missing(extension)
    except MailchimpSyncError as problem:
        flash_message(f"The fields could not be created: {problem}", "error")
    else:
        names = ", ".join(f"{tag} in {audience.name}" for audience, tag in created)
        flash_message(f"Created {names}." if created else "No field was missing.", "success")
    return redirect(url_for(".settings_page"))


@blueprint.post("/realtime")
def realtime() -> Any:
    extension = get_extension()
    form = RealtimeForm()
    settings = extension.settings_store().get()
    if settings is None or not form.validate_on_submit():
        return _render(), 400
    settings.realtime = bool(form.realtime.data)
    extension.db.session.commit()
    if settings.realtime:
        dispatcher(real_app()).nudge()  # deliver what waited meanwhile
    flash_message(
        "Real-time updates are on."
        if settings.realtime
        else "Real-time updates are off: changes wait for the next Sync.",
        "success",
    )
    return redirect(url_for(".settings_page"))


@blueprint.post("/webhook-secret")
def rotate_webhook_secret() -> Any:
    """A new secret (the old URL stops working) and the webhooks registered again."""
    extension = get_extension()
    if not WebhookForm().validate_on_submit():
        return _render(), 400
    problem = connection.register_webhooks(extension, rotate=True)
    _flash_if(problem)
    if problem is None:
        flash_message("The webhook has a new secret and is registered again.", "success")
    return redirect(url_for(".settings_page"))


def _flash_if(message: str | None) -> None:
    if message:
        flash_message(message, "warning")


@blueprint.get("/runs")
def runs_page() -> Any:
    extension = get_extension()
    SyncRun = extension.models.SyncRun
    page = _paginate(extension, sa.select(SyncRun).order_by(SyncRun.id.desc()), per_page=25)
    return render_template("mailchimp_sync/runs.html", page=page)


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
    return render_template(
        "mailchimp_sync/run.html",
        run=run,
        percent=run_summary(run)["percent"],
        items=page,
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
    return {
        "id": run.id,
        "state": run.state,
        "phase": run.phase,
        "dry_run": run.dry_run,
        "processed": run.processed,
        "total": run.total,
        "percent": 100
        if run.state == "done"
        else (100 * run.processed // run.total if run.total else 0),
        "counts": {name: getattr(run, name) for name in OUTCOMES},
        "error": run.error,
        "notes": run.notes,
    }


def _render(
    *,
    connect: FlaskForm | None = None,
    audiences: FlaskForm | None = None,
    listed: tuple[list[AudienceInfo] | None, str | None] | None = None,
) -> str:
    """The page; *listed* is the audience list when the caller already asked Mailchimp."""
    extension = get_extension()
    store = extension.settings_store()
    settings = store.get()
    connected = settings is not None and settings.is_connected
    # A key the app cannot decrypt: staff can connect again, or disconnect.
    key_problem = str(StoredKeyUnreadableError()) if connected and store.key_unreadable() else None
    if listed is None:
        listed = _available_audiences(extension) if connected and not key_problem else (None, None)
    available, problem = listed
    if connected and audiences is None:
        audiences = audiences_form(
            extension.roles,
            available,
            _saved_ids(extension),
            formdata=None,
            data=_saved_choices(extension, settings, available),
        )
    return render_template(
        "mailchimp_sync/settings.html",
        settings=settings,
        connected=connected,
        key_problem=key_problem,
        roles=list(enumerate(extension.roles)),
        connect_form=connect or connect_form(extension.roles, formdata=None),
        audiences_form=audiences,
        disconnect_form=DisconnectForm(formdata=None),
        sync_form=SyncForm(formdata=None),
        realtime_form=RealtimeForm(formdata=None, realtime=settings.realtime if settings else True),
        outbox=outbox_summary(extension) if connected else None,
        deliveries=recent_deliveries(extension) if connected else [],
        first_sync_pending=waiting_for_first_sync(settings),
        webhook_form=WebhookForm(formdata=None),
        public_url=current_app.config.get("MAILCHIMP_SYNC_PUBLIC_URL"),
        recent_runs=_recent_runs(extension),
        fields_report=_fields_report(extension) if connected and not key_problem else None,
        fields_form=FieldsForm(formdata=None),
        daily_form=DailySyncForm(
            formdata=None,
            daily_hour=""
            if settings is None or settings.daily_sync_hour is None
            else str(settings.daily_sync_hour),
        ),
        daily_cron=None
        if settings is None or settings.daily_sync_hour is None or redis_url(current_app.config)
        else cron_line(settings.daily_sync_hour),
        audiences_problem=problem,
        role_field=role_field,
    )


def _fields_report(extension: MailchimpSync) -> list[fields.AudienceFields] | None:
    try:
        return fields.report(extension)
    except MailchimpSyncError:
        return None  # the page says Mailchimp could not be reached elsewhere


def _recent_runs(extension: MailchimpSync) -> list[Any]:
    SyncRun = extension.models.SyncRun
    query = sa.select(SyncRun).order_by(SyncRun.id.desc()).limit(5)
    return list(extension.db.session.execute(query).scalars())


def _available_audiences(extension: MailchimpSync) -> tuple[list[AudienceInfo] | None, str | None]:
    """The account's audiences, or ``None`` and why (the page then offers ID boxes)."""
    try:
        return connection.list_audiences(extension), None
    except MailchimpSyncError as problem:
        return None, str(problem)


def _saved_ids(extension: MailchimpSync) -> list[str]:
    settings = extension.settings_store().get()
    return [a.audience_id for a in settings.audiences] if settings is not None else []


def _saved_choices(
    extension: MailchimpSync, settings: Any, available: list[AudienceInfo] | None
) -> dict[str, Any]:
    """What the audience form shows before staff touch it."""
    data: dict[str, Any] = {
        "double_opt_in": settings.double_opt_in,
        "profile_updates": settings.profile_updates,
    }
    # One audience in the account: both roles in it is the recommended default.
    only = available[0].id if available and len(available) == 1 else NOT_SYNCED
    for n, role in enumerate(extension.roles):
        saved = settings.audience_for(role)
        data[role_field(n, "audience")] = saved.audience_id if saved else only
        data[role_field(n, "tag")] = saved.tag if saved and saved.tag else default_tag(role)
    return data


def _field_for(
    form: FlaskForm, extension: MailchimpSync, problem: ConnectionProblem, kind: str
) -> Any:
    if problem.field == "api_key" or problem.field not in extension.roles:
        return form["api_key"] if "api_key" in form else form[role_field(0, kind)]
    n = extension.roles.index(problem.field)
    pasted = form._fields.get(role_field(n, "audience_id"))
    return pasted if pasted is not None and pasted.data else form[role_field(n, kind)]
