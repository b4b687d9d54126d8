"""Every read and write of the extension's settings goes through :class:`SettingsStore`.

One store today; a multi-store host will pass another store key here and nothing else
needs to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import orm

from . import bounds
from .crypto import data_center, decrypt_api_key, encrypt_api_key
from .exceptions import StoredKeyUnreadableError
from .models import DEFAULT_STORE, Models, utcnow


class SettingsStore:
    """Settings of one store, read through the host's session."""

    def __init__(
        self,
        models: Models,
        session: orm.Session,
        config: Mapping[str, Any],
        store: str = DEFAULT_STORE,
    ) -> None:
        self.models = models
        self.session = session
        self.config = config
        self.store = store

    def get(self) -> Any:
        """The settings row, or ``None`` when nothing was ever saved."""
        Settings = self.models.Settings
        return self.session.query(Settings).filter_by(store=self.store).one_or_none()

    def get_or_create(self) -> Any:
        settings = self.get()
        if settings is None:
            settings = self.models.Settings(store=self.store)
            self.session.add(settings)
        return settings

    def api_key(self) -> str | None:
        """The decrypted API key, or ``None`` when no account is connected."""
        settings = self.get()
        if settings is None or not settings.api_key_encrypted:
            return None
        return decrypt_api_key(self.config, settings.api_key_encrypted)

    def key_unreadable(self) -> bool:
        """Whether a key is stored that this app cannot decrypt (its secret changed).

        Staff can then only connect again or disconnect; everything else needs the key.
        """
        try:
            self.api_key()
        except StoredKeyUnreadableError:
            return True
        return False

    def save_account(self, api_key: str, *, account_id: str, account_name: str) -> Any:
        """Remember a verified key (encrypted) and the account it opens."""
        settings = self.get_or_create()
        settings.api_key_encrypted = encrypt_api_key(self.config, api_key)
        settings.data_center = data_center(api_key)
        # Mailchimp's words, only ever shown: shortened to fit rather than refused.
        settings.account_id = bounds.fit(self.models.Settings, "account_id", account_id)
        settings.account_name = bounds.fit(self.models.Settings, "account_name", account_name)
        settings.connected_at = utcnow()
        return settings

    def forget_account(self) -> None:
        """Forget the key and the account; options and audiences stay for a reconnect."""
        settings = self.get()
        if settings is not None:
            settings.api_key_encrypted = None
            settings.account_id = settings.account_name = settings.connected_at = None

    def set_audience(
        self, role: str, audience_id: str | None, *, name: str | None = None, tag: str | None = None
    ) -> None:
        """Send *role*'s contacts to *audience_id*; ``None`` stops syncing that role."""
        settings = self.get_or_create()
        current = settings.audience_for(role)
        if audience_id is None:
            if current is not None:
                settings.audiences.remove(current)
            return
        if current is None:
            current = self.models.RoleAudience(role=role)
            settings.audiences.append(current)
        if current.audience_id != audience_id:
            # Another audience: read it afresh, and no real-time delivery before its Sync.
            current.pulled_at = current.first_synced_at = current.merge_tags = None
        current.audience_id = audience_id
        current.audience_name = bounds.fit(self.models.RoleAudience, "audience_name", name)
        current.tag = tag
