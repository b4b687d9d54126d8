"""What differs between the library versions the extension supports.

The floors are in ``setup.cfg`` (and the README's version table); CI's lowest-versions
job installs exactly them. A host that ends up below a floor anyway (a requirements
file installed after this package, ``--no-deps``) gets :func:`check_versions`'s message
at import instead of an error from deep inside SQLAlchemy.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .exceptions import UnsupportedVersionError

#: The floors of ``setup.cfg`` that an older release would fail on in obscure ways.
FLOORS = {"SQLAlchemy": "2.0", "Flask-SQLAlchemy": "3.0.2"}


def check_versions() -> None:
    """Raise :class:`UnsupportedVersionError` when a library is older than its floor."""
    found = {name: _installed(name) for name in FLOORS}
    old = {name: found[name] for name, floor in FLOORS.items() if _older(found[name], floor)}
    if old:
        raise UnsupportedVersionError(
            "flask-mailchimp-sync needs "
            + " and ".join(f"{name} {floor} or newer" for name, floor in FLOORS.items())
            + "; this environment has "
            + " and ".join(f"{name} {installed}" for name, installed in old.items())
            + ". Upgrade them ("
            + " ".join(f"'{name.lower()}>={floor}'" for name, floor in FLOORS.items())
            + ") together with your app's code that uses them (Flask-SQLAlchemy 3.0 and "
            "SQLAlchemy 2.0 each publish a migration guide)."
        )


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "0"


def _older(installed: str, floor: str) -> bool:
    return _numbers(installed) < _numbers(floor)


def _numbers(text: str) -> tuple[int, ...]:
    # "2.0.0rc1" -> (2, 0, 0): pre-releases of a floor count as the floor.
    return tuple(int(part) for part in re.findall(r"\d+", text.split("rc")[0])[:3])


try:  # WTForms 3.3 deprecates (value, label) tuples in favour of SelectChoice...
    from wtforms import SelectChoice
except ImportError:  # ...which older WTForms does not have: it takes the tuples

    def select_choice(value: str, label: str) -> Any:
        """A choice of a ``SelectField``, in the form this WTForms takes."""
        return (value, label)

else:

    def select_choice(value: str, label: str) -> Any:
        """A choice of a ``SelectField``, in the form this WTForms takes."""
        return SelectChoice(value, label)
