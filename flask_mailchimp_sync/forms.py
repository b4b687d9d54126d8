"""The staff page's forms (Flask-WTF, so every one carries a CSRF token).

Audience fields depend on the roles the host registered, so their form classes are
built per request from :func:`connect_form` and :func:`audiences_form`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    Field,
    PasswordField,
    SelectField,
    StringField,
    SubmitField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from ._compat import select_choice
from .client import AudienceInfo
from .crypto import API_KEY_PATTERN
from .exceptions import InvalidApiKeyError

#: Audience IDs are short lowercase alphanumerics (``a1b2c3d4e5``).
AUDIENCE_ID = Regexp(
    r"^[0-9a-z]{6,32}$",
    message="An Audience ID is letters and digits, like a1b2c3d4e5.",
)
NOT_SYNCED = ""


def _printable(form: FlaskForm, field: Field) -> None:
    if any(ord(character) < 32 for character in field.data or ""):
        raise ValidationError("Use letters, digits, spaces and punctuation only.")


def _api_key_shape(form: FlaskForm, field: Field) -> None:
    if not API_KEY_PATTERN.match((field.data or "").strip()):
        raise ValidationError(str(InvalidApiKeyError()))


class ConnectFormBase(FlaskForm):
    # A password field is never rendered back with its value, so the key is not either.
    api_key = PasswordField("API key", validators=[DataRequired(), _api_key_shape])
    connect = SubmitField("Connect")


class AudiencesFormBase(FlaskForm):
    """Every setting of a connected account, saved by one button."""

    double_opt_in = BooleanField("Ask new subscribers to confirm by email first (double opt-in)")
    profile_updates = BooleanField("Take name changes made in Mailchimp into the shop")
    realtime = BooleanField("Send each change to Mailchimp as it happens (real-time updates)")
    #: A Sync every day, for values that change with time alone (items expiring soon).
    daily_hour = SelectField(
        "Sync every day",
        choices=[select_choice("", "Off")]
        + [select_choice(str(hour), f"at {hour:02d}:00 UTC") for hour in range(24)],
        default="",
    )
    save = SubmitField("Save settings")


class DisconnectForm(FlaskForm):
    """Disconnect asks first: the box must be ticked, or nothing happens."""

    confirm = BooleanField(
        "Yes, disconnect the shop from this Mailchimp account",
        validators=[DataRequired("Tick the box to confirm, or go back: nothing was changed.")],
    )
    disconnect = SubmitField("Disconnect")


class WebhookForm(FlaskForm):
    rotate = SubmitField("New webhook secret")


class SyncForm(FlaskForm):
    """The Sync and Preview buttons (one form: which button was pressed decides)."""

    sync = SubmitField("Sync")
    preview = SubmitField("Preview")


class FieldsForm(FlaskForm):
    """The Fields section's button: create the declared fields an audience lacks."""

    create_fields = SubmitField("Create missing fields")


def role_field(role_index: int, kind: str) -> str:
    """Field names use the role's position: role names may hold any characters."""
    return f"role{role_index}_{kind}"


def connect_form(roles: Sequence[str], **kwargs: Any) -> FlaskForm:
    """Key, plus an optional pasted Audience ID per role."""
    fields = {
        role_field(n, "audience_id"): StringField(
            f"{role.replace('_', ' ').title()} audience ID",
            validators=[Optional(), AUDIENCE_ID],
            filters=[_strip],
        )
        for n, role in enumerate(roles)
    }
    return type("ConnectForm", (ConnectFormBase,), fields)(**kwargs)


def audiences_form(
    roles: Sequence[str],
    audiences: Sequence[AudienceInfo] | None,
    saved: Sequence[tuple[str, str | None]] = (),
    **kwargs: Any,
) -> FlaskForm:
    """A dropdown per role, and its tag.

    *saved* (id, name) audiences that the account no longer lists stay selectable, so
    the page shows what is saved even after an audience was deleted in Mailchimp, or
    while Mailchimp cannot list them (then by the names saved with them).
    """
    listed = {a.id for a in audiences or []}
    unlisted = "could not be listed now" if audiences is None else "not found in this account"
    choices = [select_choice(NOT_SYNCED, "— not synced —")]
    choices += [select_choice(a.id, a.label) for a in audiences or []]
    choices += [
        select_choice(i, f"{name or 'Audience ' + i} ({unlisted})")
        for i, name in dict(saved).items()
        if i not in listed
    ]
    fields: dict[str, Field] = {}
    for n, role in enumerate(roles):
        label = f"{role.replace('_', ' ').title()} audience"
        fields[role_field(n, "audience")] = SelectField(label, choices=choices)
        fields[role_field(n, "audience_id")] = StringField(
            "Or paste an Audience ID", validators=[Optional(), AUDIENCE_ID], filters=[_strip]
        )
        fields[role_field(n, "tag")] = StringField(
            "Tag", validators=[DataRequired(), Length(max=100), _printable], filters=[_strip]
        )
    return type("AudiencesForm", (AudiencesFormBase,), fields)(**kwargs)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
