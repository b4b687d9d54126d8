"""``flask mailchimp ...``: the extension from the shell."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from . import connection
from .connection import AudienceChoice, ConnectionProblem
from .extension import get_extension

mailchimp_cli = AppGroup("mailchimp", help="Mailchimp sync: connection, audiences and syncs.")


@mailchimp_cli.command("status")
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
@click.option("--consignor-audience", metavar="ID", help="Audience ID for consignors.")
@click.option("--customer-audience", metavar="ID", help="Audience ID for customers.")
@click.option(
    "--audience", "audiences", metavar="ROLE=ID", multiple=True, help="Audience ID for any role."
)
def connect_command(
    api_key: str,
    consignor_audience: str | None,
    customer_audience: str | None,
    audiences: tuple[str, ...],
) -> None:
    """Verify an API key with Mailchimp and save it (encrypted), with audiences."""
    extension = get_extension()
    chosen = dict(item.partition("=")[::2] for item in audiences)
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
    for audience in settings.audiences:
        click.echo(f"  {audience.role}: {audience.audience_name} [{audience.audience_id}]")


@mailchimp_cli.command("disconnect")
def disconnect_command() -> None:
    """Forget the API key, the account and the audience choices."""
    extension = get_extension()
    connection.disconnect(extension)
    extension.db.session.commit()
    click.echo("Disconnected; the API key is forgotten.")
