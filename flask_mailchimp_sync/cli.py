"""``flask mailchimp ...``: the extension from the shell."""

from __future__ import annotations

import click
from flask.cli import AppGroup

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
            target = f"audience {name} [{audience.audience_id}]"
        click.echo(f"  {role} ({models}): {target}")
