"""Serving the emulator on 127.0.0.1: in a thread for tests, as a process for the demo."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .api import create_app
from .faults import Faults
from .state import Account, Audience, EmulatorState


class _QuietHandler(WSGIRequestHandler):
    """No access log: a benchmark makes thousands of requests, and drops are intended."""

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class MailchimpEmulator:
    """A local Mailchimp Marketing API v3, for tests, benchmarks and the demo.

    ::

        with MailchimpEmulator() as mailchimp:
            account = mailchimp.state.add_account("Marigold Consignment")
            audience = mailchimp.state.add_audience(account, "Customers")
            app.config["MAILCHIMP_SYNC_API_URL"] = mailchimp.api_url
            ...
            assert mailchimp.state.member(audience.id, "ann@mail.shop").status == "subscribed"
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None
    ) -> None:
        self.state = EmulatorState()
        self.faults = faults or Faults()
        self.wsgi_app = create_app(self.state, self.faults)
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("The emulator is not serving; call start() first.")
        return f"http://{self._host}:{self._server.server_port}"

    @property
    def api_url(self) -> str:
        """What ``MAILCHIMP_SYNC_API_URL`` should be (with mailchimp3's trailing slash)."""
        return f"{self.url}/3.0/"

    def bind(self) -> MailchimpEmulator:
        """Open the listening socket (so ``url`` is known and connections queue up)."""
        if self._server is None:
            self._server = make_server(
                self._host, self._port, self.wsgi_app, threaded=True, request_handler=_QuietHandler
            )
            self._server.daemon_threads = True  # type: ignore[attr-defined]
        return self

    def start(self) -> MailchimpEmulator:
        """Serve in a background thread."""
        self.bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mailchimp-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve_forever(self) -> None:
        """Serve in the calling thread (the process mode); Ctrl-C stops it."""
        self.bind()
        assert self._server is not None
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> MailchimpEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_account_with_audiences(
        self, name: str, *audiences: str, api_key: str | None = None
    ) -> tuple[Account, list[Audience]]:
        """An account and its audiences in one call, the usual arrangement of a test."""
        account = self.state.add_account(name, api_key=api_key)
        return account, [self.state.add_audience(account, audience) for audience in audiences]
