"""The lowest-versions job's two helpers, both reading setup.cfg's install_requires.

    python .ci/lowest.py constraints   # pip constraints pinning every requirement to its floor
    python .ci/lowest.py check         # fails unless each floor is what got installed

So setup.cfg is the one list: the job installs exactly its floors, and the README's
version table is checked against the same list by tests/test_versions.py.
"""

from __future__ import annotations

import configparser
import re
import sys
from importlib.metadata import version
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def floors() -> dict[str, str]:
    """Each runtime requirement's name and lowest allowed version."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    found = {}
    for line in config["options"]["install_requires"].split("\n"):
        if line.strip():
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", line.strip())
            if match is None:
                sys.exit(f"setup.cfg: {line.strip()!r} is not NAME>=FLOOR")
            found[match[1]] = match[2]
    return found


def main(command: str) -> None:
    if command == "constraints":
        for name, floor in floors().items():
            print(f"{name}=={floor}")
        return
    wrong = []
    for name, floor in floors().items():
        installed = version(name)
        print(f"  {name:18} {installed}")
        if _release(installed) != _release(floor):
            wrong.append(f"{name} {installed} (floor {floor})")
    if wrong:
        sys.exit("installed above the floor: " + ", ".join(wrong))


def _release(text: str) -> tuple[int, ...]:
    numbers = tuple(int(part) for part in text.split("."))
    return numbers + (0,) * (3 - len(numbers))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "check")
