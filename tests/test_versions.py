"""Version support: the floors setup.cfg declares are the ones the code checks."""

from __future__ import annotations

import runpy
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]


def setup_cfg_floors() -> dict[str, str]:
    floors = runpy.run_path(str(ROOT / ".ci" / "lowest.py"))["floors"]
    return {name.lower(): floor for name, floor in floors().items()}


def test_the_readme_table_is_setup_cfgs_floors():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Supported versions")[1].split("\n\n")[2]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    listed = {name.split()[0].strip().lower(): floor.strip() for name, floor in rows}
    assert listed == setup_cfg_floors()


def test_the_floors_checked_at_import_are_setup_cfgs():
    floors = setup_cfg_floors()
    assert {name.lower(): floor for name, floor in _compat.FLOORS.items()} == {
        name: floors[name] for name in ("sqlalchemy", "flask-sqlalchemy")
    }
