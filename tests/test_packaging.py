from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_every_template_and_no_tests(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("flask_mailchimp_sync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "flask_mailchimp_sync" / "templates").rglob("*.html")
    }
    assert "flask_mailchimp_sync/templates/mailchimp_sync/settings.html" in templates
    assert templates <= names
    assert "flask_mailchimp_sync/py.typed" in names
    assert "flask_mailchimp_sync/testing/emulator/api.py" in names
    assert not any(name.startswith(("tests/", "example_app/")) for name in names)
    metadata = next(name for name in names if name.endswith("METADATA"))
    requirements = [
        line
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist")
    ]
    specifiers = [line.split(";")[0] for line in requirements]
    assert specifiers and not any("<" in s or "==" in s for s in specifiers)  # lower bounds only
