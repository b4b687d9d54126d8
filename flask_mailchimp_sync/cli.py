"""``flask mailchimp ...``: the extension from the shell."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from flask.cli import AppGroup

from . import connection, fields, words
from ._state import get_extension, real_app
from .connection import AudienceChoice
from .engine.delivery import drain
from .engine.members import OUTCOMES
from .exceptions import (
    ConfigurationError,
    ConnectionProblem,
    MailchimpSyncError,
    StoredKeyUnreadableError,
    SyncRefused,
)
from .inbound import reconcile
from .jobs import DRAIN_JOB_PATH, execute_run, queue, redis_url, start_sync

mailchimp_cli = AppGroup("mailchimp", help="Mailchimp sync: connection, audiences and syncs.")


def ready(command: Callable[..., Any]) -> Callable[..., Any]:
    """Before a command touches the database: one clear message if it cannot."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            get_extension().check_ready()
        except ConfigurationError as problem:
            raise click.ClickException(str(problem)) from None
        return command(*args, **kwargs)

    return checked


@mailchimp_cli.command("status")
@ready
def status_command() -> None:
    """Say whether a Mailchimp account is connected, and where each role goes."""
    extension = get_extension()
    settings = extension.settings_store().get()
    if settings is None or not settings.is_connected:
        click.echo("Mailchimp: not connected.")
    else:
        since = settings.connected_at.strftime("%Y-%m-%d %H:%M") if settings.connected_at else "?"
        click.echo(
            f"Mailchimp: connected to {settings.account_name} ({settings.data_center}), "
            f"key {settings.masked_api_key}, since {since}."
        )
        if extension.settings_store().key_unreadable():
            click.echo(f"{StoredKeyUnreadableError()} (flask mailchimp connect)")
    for role in extension.roles:
        audience = settings.audience_for(role) if settings is not None else None
        models = ", ".join(source.model.__name__ for source in extension.sources_for(role))
        if audience is None:
            target = "no audience chosen (not synced)"
        else:
            name = audience.audience_name or audience.audience_id
            target = f"audience {name} [{audience.audience_id}], tag {audience.tag!r}"
        click.echo(f"  {role} ({models}): {target}")
    SyncRun = extension.models.SyncRun
    last = extension.db.session.query(SyncRun).order_by(SyncRun.id.desc()).first()
    click.echo(f"Last sync: {_describe_run(last)}")


def _describe_run(run: object | None) -> str:
    if run is None:
        return "never"
    when = run.finished_at or run.started_at or run.queued_at  # type: ignore[attr-defined]
    return f"#{run.id} {run.state} at {when:%Y-%m-%d %H:%M}"  # type: ignore[attr-defined]


@mailchimp_cli.command("connect")
@click.option(
    "--api-key",
    envvar="MAILCHIMP_API_KEY",
    prompt="Mailchimp API key",
    hide_input=True,
    help="The key (or set MAILCHIMP_API_KEY; asked for, unechoed, when omitted).",
)
@click.option(
    "--audience",
    "audiences",
    metavar="ROLE=ID",
    multiple=True,
    callback=lambda _ctx, _param, values: [_role_and_id(value) for value in values],
    help="The audience of a role, e.g. customer=a1b2c3d4e5 (repeat it for each role).",
)
@click.option("--consignor-audience", metavar="ID", help="Same as --audience consignor=ID.")
@click.option("--customer-audience", metavar="ID", help="Same as --audience customer=ID.")
@ready
def connect_command(
    api_key: str,
    audiences: list[tuple[str, str]],
    consignor_audience: str | None,
    customer_audience: str | None,
) -> None:
    """Verify an API key with Mailchimp and save it (encrypted), with audiences.

    Without audiences, it lists the account's audiences to choose from.
    """
    extension = get_extension()
    chosen = dict(audiences)
    for role, audience_id in (("consignor", consignor_audience), ("customer", customer_audience)):
        if audience_id:
            chosen[role] = audience_id
    unknown = set(chosen) - set(extension.roles)
    if unknown:
        raise click.UsageError(
            f"No contact source has the role {', '.join(sorted(unknown))}; "
            f"registered roles: {', '.join(extension.roles) or 'none'}."
        )
    try:
        settings = connection.connect(
            extension, api_key, {role: AudienceChoice(i) for role, i in chosen.items()}
        )
    except ConnectionProblem as problem:
        extension.db.session.rollback()
        where = "" if problem.field == "api_key" else f"{problem.field} audience: "
        raise click.ClickException(where + problem.message) from None
    extension.db.session.commit()
    click.echo(f"Connected to {settings.account_name} ({settings.data_center}).")
    warning = connection.register_webhooks(extension)
    if warning:
        click.echo(warning, err=True)
    for audience in settings.audiences:
        click.echo(f"  {audience.role}: {audience.audience_name} [{audience.audience_id}]")
    if not chosen:
        _list_audiences(extension)


def _role_and_id(value: str) -> tuple[str, str]:
    role, _, audience_id = value.partition("=")
    if not role.strip() or not audience_id.strip():
        raise click.BadParameter(f"{value!r} is not ROLE=ID; write e.g. customer=a1b2c3d4e5.")
    return role.strip(), audience_id.strip()


def _list_audiences(extension: Any) -> None:
    """The account's audiences, and how to choose them (after a connect without any)."""
    try:
        listed = connection.list_audiences(extension)
    except MailchimpSyncError as problem:
        click.echo(f"Could not list the account's audiences: {problem}", err=True)
        return
    if not listed:
        click.echo("The account has no audiences yet: create one in Mailchimp first.")
        return
    click.echo("Audiences in this account:")
    for audience in listed:
        click.echo(f"  {audience.id}  {audience.label}")
    roles = " ".join(f"--audience {role}=ID" for role in extension.roles)
    click.echo(f"Choose them with: flask mailchimp connect {roles} (or on the Mailchimp page).")


@mailchimp_cli.command("disconnect")
@ready
def disconnect_command() -> None:
    """Forget the API key and the webhook's secret; members stay in Mailchimp.

    The audience choices are kept for reconnecting to the same account.
    """
    extension = get_extension()
    left = connection.disconnect(extension)
    extension.db.session.commit()
    click.echo(
        "Disconnected; the API key is forgotten. Members stay in Mailchimp as they are; "
        "the audience choices are kept for reconnecting to the same account."
    )
    if left:
        click.echo(left, err=True)


@mailchimp_cli.command("sync")
@click.option("--dry-run", is_flag=True, help="Preview: show what would change, send nothing.")
@click.option("--role", default=None, help="Only this role's audience (with roles sharing it).")
@click.option("--full", is_flag=True, help="Resend every contact, even those unchanged.")
@ready
def sync_command(dry_run: bool, role: str | None, full: bool) -> None:
    """Sync the shop's contacts to Mailchimp now, with a progress bar."""
    extension = get_extension()
    try:
        run = start_sync(
            extension, role=role, dry_run=dry_run, full=full, trigger="cli", enqueue=False
        )
    except SyncRefused as refused:
        raise click.ClickException(str(refused)) from None
    names = words.audience_names(extension)
    with click.progressbar(length=1, label="Preview" if dry_run else "Sync", show_pos=True) as bar:

        def show(progress: Any) -> None:
            bar.length = max(progress.total, 1)
            bar.label = words.phase_text(progress, names) or bar.label
            bar.update(progress.processed - bar.pos)

        run = execute_run(extension, run.id, on_progress=show)
    click.echo(describe_counts(run))
    if run.state != "done":
        raise click.ClickException(run.error or "The sync did not finish.")


def describe_counts(run: Any) -> str:
    counts = ", ".join(f"{getattr(run, name)} {name.replace('_', ' ')}" for name in OUTCOMES)
    note = " (preview: nothing was sent)" if run.dry_run else ""
    notes = "".join(f"\nNote: {line}" for line in (run.notes or "").splitlines())
    return f"Run #{run.id} {run.state}: {counts}{note}.{notes}"


@mailchimp_cli.command("fields")
@click.option("--create", is_flag=True, help="Create the missing fields in every audience.")
@ready
def fields_command(create: bool) -> None:
    """Each declared merge field in each chosen audience: present, missing or another type."""
    extension = get_extension()
    try:
        if create:
            for audience, tag in fields.create_missing(extension):
                click.echo(f"Created {tag} in {audience.name}.")
        audiences = fields.report(extension)
    except MailchimpSyncError as problem:
        raise click.ClickException(str(problem)) from None
    if not audiences:
        click.echo("No chosen audience has declared merge fields (MergeField in add_source).")
    for audience in audiences:
        click.echo(f"{audience.name} ({audience.audience_id}), for {', '.join(audience.roles)}:")
        if audience.problem:
            click.echo(f"  could not read its fields: {audience.problem}")
        for found in audience.fields:
            other = f" ({found.found_type}, declared {found.declared.type})"
            click.echo(
                f"  {found.tag:<10} {found.declared.name} [{found.declared.type}]: "
                f"{found.state}{other if found.state == fields.OTHER_TYPE else ''}"
            )
    missing = sum(len(a.missing) for a in audiences)
    if missing and not create:
        click.echo(f"{missing} missing; `flask mailchimp fields --create` creates them.")


@mailchimp_cli.command("reconcile")
@ready
def reconcile_command() -> None:
    """Read unsubscribes and bounces from Mailchimp and turn those flags off in the shop."""

    try:
        turned_off = reconcile(get_extension())
    except MailchimpSyncError as problem:
        raise click.ClickException(str(problem)) from None
    click.echo(f"Marketing turned off for {turned_off} contact(s) who left in Mailchimp.")


@mailchimp_cli.command("drain")
@ready
def drain_command() -> None:
    """Deliver the real-time changes waiting in the outbox now."""

    result = drain(get_extension(), due_only=False)
    click.echo(f"Delivered {result.delivered} change(s); {result.waiting} waiting.")
    if result.error:
        raise click.ClickException(result.error)


@mailchimp_cli.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@ready
def worker_command(burst: bool) -> None:
    """Run an RQ worker for the sync jobs (needs MAILCHIMP_SYNC_REDIS_URL or REDIS_URL)."""
    from rq import SimpleWorker

    app = real_app()
    if redis_url(app.config) is None:
        raise click.ClickException(
            "No Redis is configured (MAILCHIMP_SYNC_REDIS_URL or REDIS_URL), so jobs run "
            "inside the web process and no worker is needed."
        )
    jobs = queue(app)
    # Changes that waited while no worker ran (or Redis was down) go first.
    jobs.enqueue(DRAIN_JOB_PATH)
    # RQ forks its scheduler: it must not inherit the connection @ready left in the pool,
    # or a killed worker's open transaction would outlive it and block the next sync.
    get_extension().db.engine.dispose()
    # SimpleWorker runs jobs in this process, inside the app context this command has;
    # its scheduler runs the delayed retries of failed deliveries.
    SimpleWorker([jobs], connection=jobs.connection).work(burst=burst, with_scheduler=not burst)
