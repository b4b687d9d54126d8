"""Mailchimp's batch results: what each operation of a ``/batches`` call came to.

A finished batch points to an archive (a gzipped tar of JSON lists, one result per
operation, in no set order); the client downloads it, and this reads it.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any


def batch_results(archive: bytes, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Mailchimp's results archive: a gzipped tar of JSON lists of operation results."""
    found: dict[int, tuple[int, dict[str, Any]]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for entry in tar.getmembers():
            handle = tar.extractfile(entry) if entry.isfile() else None
            if handle is None:
                continue
            for result in json.loads(handle.read() or b"[]"):
                text = result.get("response") or ""
                reply = json.loads(text) if text.strip().startswith("{") else {}
                found[int(result["operation_id"])] = (int(result["status_code"]), reply)
    # An operation missing from the archive is treated as not done (sent again later).
    return [found.get(n, (0, {})) for n in range(count)]
