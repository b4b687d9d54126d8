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
    double_opt_in = BooleanField(
        "Double opt-in: new subscribers get a confirmation email first (status pending)"
    )
    profile_updates = BooleanField("Take name changes made in Mailchimp into the shop")
    save = SubmitField("Save")


class DisconnectForm(FlaskForm):
    disconnect = SubmitField("Disconnect")


class RealtimeForm(FlaskForm):
    realtime = BooleanField("Send each change to Mailchimp as it happens (real-time updates)")
    save_realtime = SubmitField("Save")


class WebhookForm(FlaskForm):
    rotate = SubmitField("New webhook secret")


class SyncForm(FlaskForm):
    """The Sync and Preview buttons (one form: which button was pressed decides)."""

    sync = SubmitField("Sync")
    preview = SubmitField("Preview")


class DailySyncForm(FlaskForm):
    """A Sync every day, for values that change with time alone (items expiring soon)."""

    daily_hour = SelectField(
        "Sync every day",
        choices=[select_choice("", "Off")]
        + [select_choice(str(hour), f"at {hour:02d}:00 UTC") for hour in range(24)],
        default="",
    )
    save_daily = SubmitField("Save")


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
    saved_ids: Sequence[str] = (),
    **kwargs: Any,
) -> FlaskForm:
    """A dropdown per role (or an ID box when the list could not be read), and its tag.

    *saved_ids* that the account no longer lists stay selectable, so the page shows
    what is saved even after an audience was deleted in Mailchimp.
    """
    listed = {a.id for a in audiences or []}
    choices = [select_choice(NOT_SYNCED, "— not synced —")]
    choices += [select_choice(a.id, a.label) for a in audiences or []]
    choices += [
        select_choice(i, f"{i} (not found in this account)") for i in saved_ids if i not in listed
    ]
    fields: dict[str, Field] = {}
    for n, role in enumerate(roles):
        label = f"{role.replace('_', ' ').title()} audience"
        if audiences is None:
            fields[role_field(n, "audience")] = StringField(
                label, validators=[Optional(), AUDIENCE_ID], filters=[_strip]
            )
        else:
            fields[role_field(n, "audience")] = SelectField(label, choices=choices)
        fields[role_field(n, "audience_id")] = StringField(
            "or paste an Audience ID", validators=[Optional(), AUDIENCE_ID], filters=[_strip]
        )
        fields[role_field(n, "tag")] = StringField(
            "Tag", validators=[DataRequired(), Length(max=100), _printable], filters=[_strip]
        )
    return type("AudiencesForm", (AudiencesFormBase,), fields)(**kwargs)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
