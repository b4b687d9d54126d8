"""``/batches``: Mailchimp's batch operations, run through the emulator's own API.

Each operation is dispatched to the same handlers as a direct request (so it is checked
and applied the same way), minus the per-request latency, faults and connection slot.
Results come back the way Mailchimp delivers them: a gzipped tar of JSON files, at a
``response_body_url`` that needs no authentication.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from typing import Any

from flask import Flask

from .entities import Account, now, timestamp
from .state import EmulatorState

INTERNAL = "emulator.internal"


def run_batch(
    app: Flask,
    state: EmulatorState,
    account: Account,
    operations: list[dict[str, Any]],
    base_url: str,
) -> dict[str, Any]:
    batch_id = secrets.token_hex(5)
    client = app.test_client()
    results: list[dict[str, Any]] = []
    for operation in operations:
        response = client.open(
            "/3.0/" + operation["path"].lstrip("/"),
            method=operation["method"],
            query_string=operation.get("params") or None,
            data=operation.get("body") or None,
            content_type="application/json",
            auth=("batch", account.api_key),
            environ_base={INTERNAL: True},
        )
        results.append(
            {
                "status_code": response.status_code,
                "operation_id": operation.get("operation_id"),
                "response": response.get_data(as_text=True),
            }
        )
    batch = {
        "id": batch_id,
        "status": "finished",
        "total_operations": len(operations),
        "finished_operations": len(operations),
        "errored_operations": sum(1 for r in results if r["status_code"] >= 400),
        "submitted_at": timestamp(now()),
        "completed_at": timestamp(now()),
        "response_body_url": f"{base_url}_emulator/batches/{batch_id}/results.tar.gz",
        "account_key": account.api_key,
        "results": results,
    }
    state.batches[batch_id] = batch
    # Mailchimp answers before it starts: the first look always finds it pending.
    return dict(public(batch), status="pending", finished_operations=0, response_body_url="")


def public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in ("results", "account_key")}


def results_archive(batch: dict[str, Any]) -> bytes:
    payload = json.dumps(batch["results"]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(f"{batch['id']}/{batch['id']}.json")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()
