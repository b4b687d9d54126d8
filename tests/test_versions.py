"""Version support: the floors setup.cfg declares are the ones the code checks."""

from __future__ import annotations

from flask_mailchimp_sync import UnsupportedVersionError, _compat


def test_an_old_sqlalchemy_is_named_at_import(monkeypatch):
    installed = {"SQLAlchemy": "1.4.54", "Flask-SQLAlchemy": "2.5.1"}
    monkeypatch.setattr(_compat, "version", installed.__getitem__)
    try:
        _compat.check_versions()
    except UnsupportedVersionError as error:
        message = str(error)
    assert message.startswith(
        "flask-mailchimp-sync needs SQLAlchemy 2.0 or newer and Flask-SQLAlchemy 3.0.2 or "
        "newer; this environment has SQLAlchemy 1.4.54 and Flask-SQLAlchemy 2.5.1. Upgrade "
        "them ('sqlalchemy>=2.0' 'flask-sqlalchemy>=3.0.2')"
    )
    assert isinstance(UnsupportedVersionError("x"), ImportError)


def test_versions_at_the_floors_pass(monkeypatch):
    installed = {"SQLAlchemy": "2.0.0", "Flask-SQLAlchemy": "3.0.2"}
    monkeypatch.setattr(_compat, "version", installed.__getitem__)
    _compat.check_versions()
