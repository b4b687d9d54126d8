"""The gate every call to the emulated API passes, in Mailchimp's order: Basic auth,
the cap of simultaneous connections per account, latency, injected faults, the body's
schema; then the handler runs under the state's lock and the request is logged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, request

from . import batches, errors, schemas
from .entities import Account
from .faults import Faults
from .fields import filter_fields
from .state import EmulatorState

Handler = Callable[..., Any]
PROBLEM_JSON = "application/problem+json"


class Gate:
    """What every API request goes through before and after its handler."""

    def __init__(self, state: EmulatorState, faults: Faults) -> None:
        self.state = state
        self.faults = faults
        self._open_lock = threading.Lock()

    def call(
        self, handler: Handler, schema: schemas.Schema | None, params: dict[str, str]
    ) -> Response:
        body: Any = None
        response: Response
        internal = bool(request.environ.get(batches.INTERNAL))
        try:
            body = _json_body() if schema is not None else None
            account = self.state.account_for(
                request.authorization.password if request.authorization else None
            )
            if internal:  # an operation of a batch: already admitted with the batch
                response = self._serve(account, handler, schema, params, body, faults=False)
            else:
                with self._connection(account):
                    response = self._serve(account, handler, schema, params, body)
        except errors.ApiError as refused:
            response = problem(refused)
        if not internal:
            self._log(body, response.status_code)
        return response

    def _serve(
        self,
        account: Account,
        handler: Handler,
        schema: schemas.Schema | None,
        params: dict[str, str],
        body: Any,
        *,
        faults: bool = True,
    ) -> Response:
        if faults and self.faults.latency:
            time.sleep(self.faults.latency)
        fault = self.faults.draw() if faults else None
        if fault == "drop":
            _drop_connection()
        if fault and fault != "timeout":
            return _fault_response(fault)
        if fault == "timeout":
            time.sleep(self.faults.hang_seconds)
        if schema is not None:
            problems = schemas.validate(body, schema)
            if problems:
                raise errors.schema_error(problems)
            params["body"] = body
        with self.state.lock:
            result = handler(account, **params)
        if result is None:
            return Response(status=204)
        return json_response(
            filter_fields(result, request.args.get("fields"), request.args.get("exclude_fields"))
        )

    @contextmanager
    def _connection(self, account: Account) -> Iterator[None]:
        """Hold one of the account's simultaneous connections, or answer 429."""
        connections = self.state.connections
        with self._open_lock:
            if connections.open[account.api_key] >= self.faults.max_connections:
                connections.refused[account.api_key] += 1
                raise errors.ApiError(
                    429,
                    "Too Many Requests",
                    f"You have exceeded the limit of {self.faults.max_connections} "
                    "simultaneous connections.",
                )
            connections.open[account.api_key] += 1
            connections.peak[account.api_key] = max(
                connections.peak[account.api_key], connections.open[account.api_key]
            )
        try:
            yield
        finally:
            with self._open_lock:
                connections.open[account.api_key] -= 1

    def _log(self, body: Any, status: int) -> None:
        entry = {
            "method": request.method,
            "path": request.path.removeprefix("/3.0"),
            "query": request.args.to_dict(),
            "body": body,
            "status": status,
            "user_agent": request.headers.get("User-Agent", ""),
            "at": time.time(),
        }
        with self.state.lock:
            self.state.requests.append(entry)


def _json_body() -> Any:
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise errors.ApiError(
            400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."
        ) from None
    if not isinstance(body, dict):
        raise errors.schema_error(
            [{"field": "", "message": "Schema describes object, body found instead"}]
        )
    return body


def _drop_connection() -> None:
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)
    raise errors.ApiError(502, "Connection dropped", "The emulator dropped this connection.")


def _fault_response(kind: str) -> Response:
    status = int(kind.split("-")[0])
    if kind.endswith("-bare"):
        return Response(b"", status=status, content_type="text/html")
    titles = {429: "Too Many Requests", 500: "Internal Server Error"}
    details = {
        429: "You have exceeded the limit of 10 simultaneous connections.",
        500: "An unexpected internal error has occurred. Please contact Support.",
    }
    return problem(errors.ApiError(status, titles[status], details[status]))


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def problem(error: errors.ApiError) -> Response:
    return Response(json.dumps(error.body()), status=error.status, content_type=PROBLEM_JSON)
