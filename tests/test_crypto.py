from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from flask_mailchimp_sync import ConfigurationError, InvalidApiKeyError, StoredKeyUnreadableError
from flask_mailchimp_sync.crypto import (
    data_center,
    decrypt_api_key,
    encrypt_api_key,
    mask_api_key,
)

KEY = "0123456789abcdef0123456789abcdef-us21"


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "0123456789abcdef0123456789abcdef",  # no data center
        "0123456789abcdef0123456789abcde-us6",  # 31 characters
        "0123456789ABCDEF0123456789ABCDEF-us6",  # Mailchimp keys are lowercase
        "0123456789abcdef0123456789abcdeg-us6",  # not hex
        "0123456789abcdef0123456789abcdef-eu1",
        "0123456789abcdef0123456789abcdef-us",
        "user@shop-us6",
    ],
)
def test_malformed_keys_are_refused_with_the_expected_shape(candidate):
    with pytest.raises(InvalidApiKeyError, match=r"32 hexadecimal characters.*-us6") as refused:
        data_center(candidate)
    assert candidate.strip() == "" or candidate not in str(refused.value)


def test_data_center_and_mask():
    assert data_center(KEY) == "us21"
    assert data_center(f"  {KEY} ") == "us21"
    assert mask_api_key(KEY) == "••••-us21"


def test_round_trip_with_a_key_derived_from_secret_key():
    config = {"SECRET_KEY": "shop-secret"}
    token = encrypt_api_key(config, KEY)
    assert KEY not in token and KEY.split("-")[0] not in token
    assert decrypt_api_key(config, token) == KEY


def test_round_trip_with_an_explicit_fernet_key():
    config = {"SECRET_KEY": "shop-secret", "MAILCHIMP_SYNC_ENCRYPTION_KEY": Fernet.generate_key()}
    token = encrypt_api_key(config, KEY)
    assert decrypt_api_key(config, token) == KEY
    with pytest.raises(StoredKeyUnreadableError):
        decrypt_api_key({"SECRET_KEY": "shop-secret"}, token)


def test_a_changed_secret_gives_a_clear_error_without_the_key():
    token = encrypt_api_key({"SECRET_KEY": "old"}, KEY)
    with pytest.raises(StoredKeyUnreadableError, match="connect the Mailchimp account again") as e:
        decrypt_api_key({"SECRET_KEY": "new"}, token)
    assert KEY not in str(e.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "set SECRET_KEY"),
        ({"SECRET_KEY": "x", "MAILCHIMP_SYNC_ENCRYPTION_KEY": "not-a-fernet-key"}, "Fernet key"),
    ],
)
def test_missing_or_bad_secrets_are_configuration_errors(config, message):
    with pytest.raises(ConfigurationError, match=message):
        encrypt_api_key(config, KEY)


def test_the_stored_key_is_encrypted_in_the_database(app, db, caplog):
    from example_app import mailchimp

    caplog.set_level(logging.DEBUG)
    store = mailchimp.settings_store()
    store.save_account(KEY, account_id="acc", account_name="Marigold")
    db.session.commit()
    raw = db.session.execute(db.text("SELECT * FROM mailchimp_sync_settings")).one()
    assert all(KEY.split("-")[0] not in str(value) for value in raw)
    settings = store.get()
    assert settings.masked_api_key == "••••-us21"
    assert store.api_key() == KEY
    store.forget_account()
    db.session.commit()
    assert store.api_key() is None and not store.get().is_connected
    assert all(KEY.split("-")[0] not in record.getMessage() for record in caplog.records)
