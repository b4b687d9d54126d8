"""The extension's per-app state, looked up from anywhere without importing the rest.

Every module that needs the app's :class:`~.extension.MailchimpSync` (pages, jobs,
the CLI, the webhook) asks here, so nothing below the composition root imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from .extension import MailchimpSync

EXTENSION_KEY = "mailchimp_sync"


@dataclass
class AppState:
    """What the extension keeps per app, in ``app.extensions["mailchimp_sync"]``."""

    extension: MailchimpSync
    #: The background thread pool for jobs when no Redis is configured (made on first use).
    executor: Any = None
    #: Its jobs not known to be done (to wait for them at shutdown and in tests).
    futures: list[Any] = field(default_factory=list)
    #: The thread that hands outbox drains to the queue (made on first use).
    dispatcher: Any = None
    #: The extension's tables were found in the database (asked until they are).
    tables_ready: bool = False


def app_state(app: Flask | None = None) -> AppState:
    """The state on *app* (default: the current app); a clear error when not registered."""
    app = app if app is not None else real_app()
    try:
        state: AppState = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            f"MailchimpSync is not registered on the app {app.name!r}. Call "
            "mailchimp.init_app(app) (or pass the app to MailchimpSync) before using it."
        ) from None
    return state


def get_extension(app: Flask | None = None) -> MailchimpSync:
    """The :class:`~.extension.MailchimpSync` registered on *app* (default: the current app)."""
    return app_state(app).extension


def real_app() -> Flask:
    """The current app itself, not the proxy: for signal senders and threads."""
    return current_app._get_current_object()  # type: ignore[attr-defined]
