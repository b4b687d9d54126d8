"""The emulated Marketing API v3 as a WSGI app (a small Flask app of its own): its
routes, each passing the same gate (:mod:`.gate`), and the ``/_emulator`` controls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from . import batches, errors, rules, schemas
from .entities import Account, parse_timestamp
from .faults import Faults
from .gate import Gate, Handler, json_response, problem
from .state import EmulatorState


def create_app(state: EmulatorState, faults: Faults) -> Flask:
    app = Flask(__name__)
    gate = Gate(state, faults)

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
        refused = (
            errors.not_found()
            if error.code == 404
            else errors.ApiError(
                405, "Method Not Allowed", "The requested method and resource are not compatible."
            )
        )
        return problem(refused)

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


def _control_routes(app: Flask, state: EmulatorState, faults: Faults) -> None:
    """``/_emulator/...``: arrange and inspect a running emulator from another process."""

    @app.get("/_emulator/state")
    def summary() -> Response:
        with state.lock:
            return json_response(
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
        return json_response(state.connections.as_json())

    @app.post("/_emulator/connections/reset")
    def reset_connections() -> Response:
        state.connections.reset()
        return json_response(state.connections.as_json())

    @app.post("/_emulator/changes")
    def start_changes() -> Response:
        """Start logging members' status changes (what ``GET`` then returns)."""
        state.record_changes()
        return json_response({"recording": True})

    @app.get("/_emulator/changes")
    def changes() -> Response:
        start = request.args.get("since", 0, type=int)
        with state.lock:
            return json_response((state.changes or [])[start:])

    @app.post("/_emulator/state")
    def set_behaviour() -> Response:
        """Switch behaviour Mailchimp's docs leave open: ``archived_in_unfiltered_list``."""
        spec = request.get_json(force=True, silent=True)
        if not isinstance(spec, dict) or set(spec) - {"archived_in_unfiltered_list"}:
            return json_response({"error": "Only archived_in_unfiltered_list can be set."}, 400)
        value = spec.get("archived_in_unfiltered_list", state.archived_in_unfiltered_list)
        if not isinstance(value, bool):
            return json_response({"error": "archived_in_unfiltered_list takes true or false."}, 400)
        with state.lock:
            state.archived_in_unfiltered_list = value
        return json_response({"archived_in_unfiltered_list": value})

    @app.get("/_emulator/lists/<list_id>/members")
    def dump_members(list_id: str) -> Response:
        with state.lock:
            audience = state.audiences.get(list_id)
            if audience is None:
                return problem(errors.not_found())
            return json_response([m.as_json(list_id) for m in audience.members.values()])

    @app.get("/_emulator/requests")
    def request_log() -> Response:
        start = request.args.get("since", 0, type=int)
        with state.lock:
            return json_response(state.requests[start:])

    @app.get("/_emulator/batches/<batch_id>/results.tar.gz")
    def batch_results(batch_id: str) -> Response:
        """Like Mailchimp's results link: no key needed, just the unguessable URL."""
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                return problem(errors.not_found())
            archive = batches.results_archive(batch)
        return Response(archive, content_type="application/x-gzip")

    @app.post("/_emulator/faults")
    def set_faults() -> Response:
        try:
            faults.configure(**(request.get_json(force=True) or {}))
        except (TypeError, ValueError, KeyError) as refused:
            return json_response({"error": str(refused)}, 400)
        return json_response({"latency": faults.latency, "error_rate": faults.error_rate})

    @app.post("/_emulator/accounts")
    def add_account() -> Response:
        spec = request.get_json(force=True) or {}
        account = state.add_account(spec.get("name", "Test Shop"), api_key=spec.get("api_key"))
        audiences = [state.add_audience(account, name).id for name in spec.get("audiences", [])]
        return json_response({"api_key": account.api_key, "audiences": audiences})
