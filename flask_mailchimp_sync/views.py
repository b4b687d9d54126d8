"""Preferences > Integrations > Mailchimp: the staff page.

Every view passes the host's authorization check first (closed when none is set).
Views call into :mod:`.connection` and the models; nothing below them imports them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import (
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm

from . import connection, fields, words
from ._state import get_extension, real_app
from .client import AudienceInfo
from .connection import AudienceChoice, default_tag
from .crypto import decrypt_api_key, encrypt_api_key
from .daily import cron_line, schedule_daily_sync
from .exceptions import ConnectionProblem, MailchimpSyncError, StoredKeyUnreadableError, SyncRefused
from .forms import (
    NOT_SYNCED,
    DisconnectForm,
    FieldsForm,
    SyncForm,
    WebhookForm,
    audiences_form,
    connect_form,
    role_field,
)
from .jobs import dispatcher, redis_url, start_syncs
from .layout import flash_message
from .pages import blueprint
from .realtime import outbox_summary, recent_deliveries, waiting_for_first_sync

if TYPE_CHECKING:
    from .extension import MailchimpSync


@blueprint.get("/")
def settings_page() -> Any:
    return _render()


#: How long a key Mailchimp accepted is kept when the rest of the connect form was
#: refused, so staff fix the audience ID without pasting the key again.
KEPT_KEY_SECONDS = 600
_KEPT_KEY = "mailchimp_sync_kept_key"


def _kept_key() -> str | None:
    """The key kept from the last refused connect form, if still fresh.

    It is kept in the session only as a Fernet token (the stored key's own encryption),
    so the cookie never holds it readable; it is never rendered into the page.
    """
    kept = session.get(_KEPT_KEY)
    if not isinstance(kept, list) or len(kept) != 2 or time.time() - kept[1] > KEPT_KEY_SECONDS:
        session.pop(_KEPT_KEY, None)
        return None
    try:
        return decrypt_api_key(current_app.config, str(kept[0]))
    except StoredKeyUnreadableError:
        session.pop(_KEPT_KEY, None)
        return None


@blueprint.post("/connect")
def connect() -> Any:
    extension = get_extension()
    form = connect_form(extension.roles)
    kept = _kept_key()
    if kept is not None and not (form.api_key.data or "").strip():
        form.api_key.data = kept  # "leave the box empty to use the key you entered"
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
            if problem.field == "api_key":
                session.pop(_KEPT_KEY, None)
            else:  # Mailchimp accepted the key: keep it, encrypted, for the next try
                token = encrypt_api_key(current_app.config, form.api_key.data)
                session[_KEPT_KEY] = [token, time.time()]
        else:
            session.pop(_KEPT_KEY, None)
            extension.db.session.commit()
            flash_message(
                f"Connected to the Mailchimp account {settings.account_name}. "
                "Next: choose the audiences below.",
                "success",
            )
            _flash_if(connection.register_webhooks(extension))
            return redirect(url_for(".settings_page"))
    return _render(connect=form), 400


@blueprint.post("/audiences")
def audiences() -> Any:
    """The one settings form: audiences, tags and every option, saved together."""
    extension = get_extension()
    listed = _available_audiences(extension)
    form = audiences_form(extension.roles, listed[0], _saved(extension))
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
            realtime_was, settings.realtime = settings.realtime, bool(form.realtime.data)
            daily_was = settings.daily_sync_hour
            settings.daily_sync_hour = int(form.daily_hour.data) if form.daily_hour.data else None
        except ConnectionProblem as problem:
            extension.db.session.rollback()
            _field_for(form, extension, problem, "audience").errors.append(problem.message)
        else:
            extension.db.session.commit()
            if settings.realtime and not realtime_was:
                dispatcher(real_app()).nudge()  # deliver what waited meanwhile
            flash_message(_saved_message(settings), "success")
            if settings.daily_sync_hour != daily_was:
                _schedule_daily(settings.daily_sync_hour)
            _flash_if(connection.register_webhooks(extension))
            # Nothing is sent now: the staff's first Sync (after a Preview) comes first.
            return redirect(url_for(".settings_page"))
    return _render(audiences=form, listed=listed), 400


def _saved_message(settings: Any) -> str:
    if not settings.audiences:
        return "Settings saved. No audience is chosen, so nothing will be sent."
    if waiting_for_first_sync(settings):
        return "Settings saved. Nothing was sent yet. Next: Preview, then Sync."
    return "Settings saved."


@blueprint.route("/disconnect", methods=["GET", "POST"])
def disconnect() -> Any:
    """Asks first (GET shows what happens); only a ticked confirmation disconnects."""
    extension = get_extension()
    settings = extension.settings_store().get()
    if settings is None or not settings.is_connected:
        flash_message("Mailchimp is not connected; there is nothing to disconnect.", "info")
        return redirect(url_for(".settings_page"))
    form = DisconnectForm()
    if request.method == "GET" or not form.validate_on_submit():
        status = 200 if request.method == "GET" else 400
        return render_template(
            "mailchimp_sync/disconnect.html", form=form, settings=settings
        ), status
    left = connection.disconnect(extension)
    extension.db.session.commit()
    flash_message(
        "Disconnected from Mailchimp. The API key is forgotten; members stay in Mailchimp "
        "as they are, and real-time updates stopped. Your audience choices are kept for "
        "reconnecting to the same account.",
        "success",
    )
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
        runs = start_syncs(extension, dry_run=bool(form.preview.data), trigger="button")
    except SyncRefused as refused:
        running = _running_run(extension)
        if running is not None:
            flash_message(f"{refused} Here is its progress.", "warning")
            return redirect(url_for(".run_page", run_id=running.id))
        flash_message(str(refused), "warning")
        return redirect(url_for(".settings_page"))
    if len(runs) > 1:
        numbers = " and ".join(f"#{run.id}" for run in runs)
        flash_message(
            f"Runs {numbers} are queued, one per audience, to go side by side; "
            "each shows its progress under Recent runs.",
            "info",
        )
        return redirect(url_for(".settings_page"))
    return redirect(url_for(".run_page", run_id=runs[0].id))


def _schedule_daily(hour: int | None) -> None:
    """Put the daily Sync on RQ's schedule (or take it off), and say where it stands."""
    try:
        scheduled = schedule_daily_sync(real_app(), hour)
    except Exception:  # Redis down: saved, and scheduled when saved again
        current_app.logger.exception("Could not schedule the daily Mailchimp sync")
        flash_message(
            "The daily Sync is saved, but Redis is unreachable: save again once it is back.",
            "warning",
        )
        return
    if hour is None:
        flash_message("The daily Sync is off.", "success")
    elif scheduled:
        flash_message(f"A Sync runs every day at {hour:02d}:00 UTC.", "success")
    else:
        flash_message(
            "This shop runs jobs inside the web process, which keeps no timers: add this "
            f"line to the server's crontab (UTC) for the daily Sync: {cron_line(hour)}",
            "warning",
        )


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


def _running_run(extension: MailchimpSync) -> Any:
    SyncRun = extension.models.SyncRun
    query = (
        sa.select(SyncRun)
        .where(SyncRun.state.in_(("queued", "running")), SyncRun.dry_run.is_(False))
        .order_by(SyncRun.id.desc())
        .limit(1)
    )
    return extension.db.session.execute(query).scalar()


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
            _saved(extension),
            formdata=None,
            data=_saved_choices(extension, settings, available),
        )
    runs = _recent_runs(extension)
    deliveries = recent_deliveries(extension) if connected else []
    return render_template(
        "mailchimp_sync/settings.html",
        settings=settings,
        connected=connected,
        key_problem=key_problem,
        key_kept=connect is not None and _kept_key() is not None,
        roles=list(enumerate(extension.roles)),
        connect_form=connect or connect_form(extension.roles, formdata=None),
        audiences_form=audiences,
        sync_form=SyncForm(formdata=None),
        outbox=outbox_summary(extension) if connected else None,
        deliveries=deliveries,
        contacts=words.contacts(extension, [i for _d, listed in deliveries for i in listed]),
        first_sync_pending=waiting_for_first_sync(settings),
        step=words.next_step(settings, connected and not key_problem, runs),
        steps=words.STEP_TITLES,
        last_sync=next((r for r in runs if not r.dry_run), None),
        names=words.audience_names(extension),
        webhook_form=WebhookForm(formdata=None),
        public_url=current_app.config.get("MAILCHIMP_SYNC_PUBLIC_URL"),
        recent_runs=runs,
        fields_report=_fields_report(extension) if connected and not key_problem else None,
        fields_form=FieldsForm(formdata=None),
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


def _saved(extension: MailchimpSync) -> list[tuple[str, str | None]]:
    """The saved audiences: (id, the name saved with it)."""
    settings = extension.settings_store().get()
    if settings is None:
        return []
    return [(a.audience_id, a.audience_name) for a in settings.audiences]


def _saved_choices(
    extension: MailchimpSync, settings: Any, available: list[AudienceInfo] | None
) -> dict[str, Any]:
    """What the settings form shows before staff touch it."""
    data: dict[str, Any] = {
        "double_opt_in": settings.double_opt_in,
        "profile_updates": settings.profile_updates,
        "realtime": settings.realtime,
        "daily_hour": "" if settings.daily_sync_hour is None else str(settings.daily_sync_hour),
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
