"""The emulated Marketing API v3 as a WSGI app (a small Flask app of its own).

Every API call passes the same gate, in Mailchimp's order: Basic auth, the cap of
simultaneous connections per account, latency, injected faults, the body's schema;
then the handler runs under the state's lock and the request is logged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, request

from . import batches, errors, rules, schemas
from .faults import Faults
from .fields import filter_fields
from .state import Account, EmulatorState, parse_timestamp

Handler = Callable[..., Any]
PROBLEM_JSON = "application/problem+json"


def create_app(state: EmulatorState, faults: Faults) -> Flask:
    app = Flask(__name__)
    gate = _Gate(state, faults)

    def route(
        rule: str, method: str, schema: schemas.Schema | None = None
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            def view(**params: str) -> Response:
                return gate.call(handler, schema, params)

            app.add_url_rule("/3.0" + rule, f"{method} {rule}", view, methods=[method])
            return handler

        return register

    _api_routes(route, state)
    _batch_routes(route, app, state)
    _control_routes(app, state, faults)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unknown_route(error: Any) -> Response:
        problem = (
            errors.not_found()
            if error.code == 404
            else errors.ApiError(
                405, "Method Not Allowed", "The requested method and resource are not compatible."
            )
        )
        return _problem(problem)

    return app


def _api_routes(route: Callable[..., Callable[[Handler], Handler]], state: EmulatorState) -> None:
    @route("/ping", "GET")
    def ping(account: Account) -> Any:
        return {"health_status": "Everything's Chimpy!"}

    @route("/", "GET")
    def root(account: Account) -> Any:
        return account.as_json()

    @route("/lists", "GET")
    def lists(account: Account) -> Any:
        audiences = state.audiences_of(account)
        count, offset = _paging()
        return {
            "lists": [a.as_json() for a in audiences[offset : offset + count]],
            "total_items": len(audiences),
        }

    @route("/lists/<list_id>", "GET")
    def get_list(account: Account, list_id: str) -> Any:
        return state.audience(account, list_id).as_json()

    @route("/lists/<list_id>", "POST", schemas.BATCH_SUBSCRIBE)
    def batch_subscribe(account: Account, list_id: str, body: dict[str, Any]) -> Any:
        return state.batch_subscribe(state.audience(account, list_id), body)

    @route("/lists/<list_id>/members", "GET")
    def list_members(account: Account, list_id: str) -> Any:
        audience = state.audience(account, list_id)
        status = request.args.get("status") or None
        if status is not None and status not in [*schemas.STATUSES, "archived"]:
            raise errors.schema_error([{"field": "status", "message": "Invalid status."}])
        since = request.args.get("since_last_changed")
        found = list(
            state.list_members(
                audience, status=status, since=parse_timestamp(since) if since else None
            )
        )
        count, offset = _paging()
        return {
            "members": [m.as_json(list_id) for m in found[offset : offset + count]],
            "list_id": list_id,
            "total_items": len(found),
        }

    @route("/lists/<list_id>/members", "POST", schemas.MEMBER_CREATE)
    def create_member(account: Account, list_id: str, body: dict[str, Any]) -> Any:
        audience = state.audience(account, list_id)
        if _hash_of(body) in audience.members:
            raise errors.member_exists(body["email_address"])
        return state.create_member(audience, body, body["status"]).as_json(list_id)

    @route("/lists/<list_id>/members/<member>", "GET")
    def get_member(account: Account, list_id: str, member: str) -> Any:
        return state.find_member(state.audience(account, list_id), member).as_json(list_id)

    @route("/lists/<list_id>/members/<member>", "PUT", schemas.MEMBER_PUT)
    def put_member(account: Account, list_id: str, member: str, body: dict[str, Any]) -> Any:
        audience = state.audience(account, list_id)
        try:
            existing = state.find_member(audience, member)
        except errors.ApiError:
            if member.lower() not in (_hash_of(body), body["email_address"].lower()):
                raise errors.invalid_resource(
                    "The subscriber hash in the URL does not match the email_address sent."
                ) from None
            status = body.get("status") or body["status_if_new"]
            return state.create_member(audience, body, status).as_json(list_id)
        state.update_member(audience, existing, body)
        return existing.as_json(list_id)

    @route("/lists/<list_id>/members/<member>", "PATCH", schemas.MEMBER_PATCH)
    def patch_member(account: Account, list_id: str, member: str, body: dict[str, Any]) -> Any:
        audience = state.audience(account, list_id)
        existing = state.find_member(audience, member)
        state.update_member(audience, existing, body)
        return existing.as_json(list_id)

    @route("/lists/<list_id>/members/<member>", "DELETE")
    def archive_member(account: Account, list_id: str, member: str) -> Any:
        state.archive_member(state.audience(account, list_id), member)

    @route("/lists/<list_id>/members/<member>/actions/delete-permanent", "POST")
    def delete_permanent(account: Account, list_id: str, member: str) -> Any:
        state.delete_permanently(state.audience(account, list_id), member)

    @route("/lists/<list_id>/members/<member>/tags", "POST", schemas.MEMBER_TAGS)
    def member_tags(account: Account, list_id: str, member: str, body: dict[str, Any]) -> Any:
        found = state.find_member(state.audience(account, list_id), member)
        state.update_tags(found, body["tags"])

    @route("/lists/<list_id>/merge-fields", "GET")
    def merge_fields(account: Account, list_id: str) -> Any:
        fields = [
            dict(f, list_id=list_id) for f in state.audience(account, list_id).merge_fields.values()
        ]
        count, offset = _paging()
        return {
            "merge_fields": fields[offset : offset + count],
            "list_id": list_id,
            "total_items": len(fields),
        }

    @route("/lists/<list_id>/merge-fields", "POST", schemas.MERGE_FIELD_CREATE)
    def add_merge_field(account: Account, list_id: str, body: dict[str, Any]) -> Any:
        return dict(state.add_merge_field(state.audience(account, list_id), body), list_id=list_id)

    @route("/lists/<list_id>/webhooks", "GET")
    def webhooks(account: Account, list_id: str) -> Any:
        hooks = list(state.audience(account, list_id).webhooks.values())
        return {"webhooks": hooks, "list_id": list_id, "total_items": len(hooks)}

    @route("/lists/<list_id>/webhooks", "POST", schemas.WEBHOOK_CREATE)
    def add_webhook(account: Account, list_id: str, body: dict[str, Any]) -> Any:
        return state.add_webhook(state.audience(account, list_id), body)

    @route("/lists/<list_id>/webhooks/<webhook_id>", "GET")
    def get_webhook(account: Account, list_id: str, webhook_id: str) -> Any:
        hook = state.audience(account, list_id).webhooks.get(webhook_id)
        if hook is None:
            raise errors.not_found()
        return hook

    @route("/lists/<list_id>/webhooks/<webhook_id>", "DELETE")
    def delete_webhook(account: Account, list_id: str, webhook_id: str) -> Any:
        if state.audience(account, list_id).webhooks.pop(webhook_id, None) is None:
            raise errors.not_found()


def _batch_routes(
    route: Callable[..., Callable[[Handler], Handler]], app: Flask, state: EmulatorState
) -> None:
    @route("/batches", "POST", schemas.BATCH_OPERATIONS)
    def create_batch(account: Account, body: dict[str, Any]) -> Any:
        return batches.run_batch(app, state, account, body["operations"], request.host_url)

    @route("/batches/<batch_id>", "GET")
    def get_batch(account: Account, batch_id: str) -> Any:
        batch = state.batches.get(batch_id)
        if batch is None or batch["account_key"] != account.api_key:
            raise errors.not_found()
        return batches.public(batch)


def _hash_of(body: dict[str, Any]) -> str:
    return rules.subscriber_hash(body["email_address"].strip())


def _paging() -> tuple[int, int]:
    """``count`` (default 10, at most 1000) and ``offset`` from the query string."""
    try:
        count = int(request.args.get("count", 10))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise errors.schema_error([{"field": "count", "message": "Must be an integer."}]) from None
    if not 0 <= count <= 1000 or offset < 0:
        raise errors.schema_error(
            [{"field": "count", "message": "count must be between 0 and 1000, offset >= 0."}]
        )
    return count, offset


class _Gate:
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
            response = _problem(refused)
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
        return _json(
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
    return _problem(errors.ApiError(status, titles[status], details[status]))


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _problem(error: errors.ApiError) -> Response:
    return Response(json.dumps(error.body()), status=error.status, content_type=PROBLEM_JSON)


def _control_routes(app: Flask, state: EmulatorState, faults: Faults) -> None:
    """``/_emulator/...``: arrange and inspect a running emulator from another process."""

    @app.get("/_emulator/state")
    def summary() -> Response:
        with state.lock:
            return _json(
                {
                    "accounts": [
                        {"api_key": a.api_key, "name": a.name} for a in state.accounts.values()
                    ],
                    "audiences": [
                        dict(a.as_json(), account_key=a.account_key)
                        for a in state.audiences.values()
                    ],
                    "requests": len(state.requests),
                    "write_requests": len(state.write_requests()),
                    "archived_in_unfiltered_list": state.archived_in_unfiltered_list,
                }
            )

    @app.get("/_emulator/connections")
    def connections() -> Response:
        """Connections in flight per account key now, the most at once, and refusals."""
        return _json(state.connections.as_json())

    @app.post("/_emulator/connections/reset")
    def reset_connections() -> Response:
        state.connections.reset()
        return _json(state.connections.as_json())

    @app.post("/_emulator/changes")
    def start_changes() -> Response:
        """Start logging members' status changes (what ``GET`` then returns)."""
        state.record_changes()
        return _json({"recording": True})

    @app.get("/_emulator/changes")
    def changes() -> Response:
        start = request.args.get("since", 0, type=int)
        with state.lock:
            return _json((state.changes or [])[start:])

    @app.post("/_emulator/state")
    def set_behaviour() -> Response:
        """Switch behaviour Mailchimp's docs leave open: ``archived_in_unfiltered_list``."""
        spec = request.get_json(force=True, silent=True)
        if not isinstance(spec, dict) or set(spec) - {"archived_in_unfiltered_list"}:
            return _json({"error": "Only archived_in_unfiltered_list can be set."}, 400)
        value = spec.get("archived_in_unfiltered_list", state.archived_in_unfiltered_list)
        if not isinstance(value, bool):
            return _json({"error": "archived_in_unfiltered_list takes true or false."}, 400)
        with state.lock:
            state.archived_in_unfiltered_list = value
        return _json({"archived_in_unfiltered_list": value})

    @app.get("/_emulator/lists/<list_id>/members")
    def dump_members(list_id: str) -> Response:
        with state.lock:
            audience = state.audiences.get(list_id)
            if audience is None:
                return _problem(errors.not_found())
            return _json([m.as_json(list_id) for m in audience.members.values()])

    @app.get("/_emulator/requests")
    def request_log() -> Response:
        start = request.args.get("since", 0, type=int)
        with state.lock:
            return _json(state.requests[start:])

    @app.get("/_emulator/batches/<batch_id>/results.tar.gz")
    def batch_results(batch_id: str) -> Response:
        """Like Mailchimp's results link: no key needed, just the unguessable URL."""
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                return _problem(errors.not_found())
            archive = batches.results_archive(batch)
        return Response(archive, content_type="application/x-gzip")

    @app.post("/_emulator/faults")
    def set_faults() -> Response:
        try:
            faults.configure(**(request.get_json(force=True) or {}))
        except (TypeError, ValueError, KeyError) as refused:
            return _json({"error": str(refused)}, 400)
        return _json({"latency": faults.latency, "error_rate": faults.error_rate})

    @app.post("/_emulator/accounts")
    def add_account() -> Response:
        spec = request.get_json(force=True) or {}
        account = state.add_account(spec.get("name", "Test Shop"), api_key=spec.get("api_key"))
        audiences = [state.add_audience(account, name).id for name in spec.get("audiences", [])]
        return _json({"api_key": account.api_key, "audiences": audiences})
