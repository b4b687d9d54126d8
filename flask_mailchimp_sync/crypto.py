"""The Mailchimp API key at rest.

The key is a password to the shop's whole Mailchimp account, so it is stored only as a
Fernet token. The Fernet key is ``MAILCHIMP_SYNC_ENCRYPTION_KEY`` when set, otherwise it
is derived from the app's ``SECRET_KEY`` (HKDF with a label of our own, so the derived
key is useless for anything else the app signs with ``SECRET_KEY``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .exceptions import ConfigurationError, InvalidApiKeyError, StoredKeyUnreadableError

#: 32 lowercase hex characters, a dash, then the data center (``us6``, ``us21`` ...).
API_KEY_PATTERN = re.compile(r"^(?P<secret>[0-9a-f]{32})-(?P<dc>us[0-9]{1,3})$")

_HKDF_INFO = b"flask-mailchimp-sync api key encryption"


def data_center(api_key: str) -> str:
    """Return the data center of *api_key* (``"us6"``), or raise :class:`InvalidApiKeyError`."""
    match = API_KEY_PATTERN.match(api_key.strip())
    if match is None:
        raise InvalidApiKeyError()
    return match["dc"]


def mask_api_key(api_key: str) -> str:
    """The only form of the key ever shown: ``••••-us6``."""
    return f"••••-{data_center(api_key)}"


def _fernet(config: Mapping[str, Any]) -> Fernet:
    explicit = config.get("MAILCHIMP_SYNC_ENCRYPTION_KEY")
    if explicit:
        try:
            return Fernet(explicit)
        except (ValueError, TypeError):
            raise ConfigurationError(
                "MAILCHIMP_SYNC_ENCRYPTION_KEY is not a Fernet key. Generate one with "
                "python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'."
            ) from None
    secret = config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "The Mailchimp API key must be stored encrypted, and there is nothing to encrypt "
            "it with: set SECRET_KEY (or MAILCHIMP_SYNC_ENCRYPTION_KEY) in the app's config."
        )
    material = secret.encode() if isinstance(secret, str) else bytes(secret)
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        material
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_api_key(config: Mapping[str, Any], api_key: str) -> str:
    """Encrypt a key (its shape checked first) for storage."""
    data_center(api_key)
    return _fernet(config).encrypt(api_key.strip().encode()).decode()


def decrypt_api_key(config: Mapping[str, Any], token: str) -> str:
    """Decrypt a stored key; a token made with another secret raises a clear error."""
    try:
        return _fernet(config).decrypt(token.encode()).decode()
    except InvalidToken:
        raise StoredKeyUnreadableError() from None
