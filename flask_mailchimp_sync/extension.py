"""The extension object a host registers: :class:`MailchimpSync`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy

# run_pages and views are imported for their routes: importing them adds them to the blueprint.
from . import bounds, logs, public_url, realtime, run_pages, views, webhooks  # noqa: F401
from ._state import EXTENSION_KEY, AppState, app_state
from .cli import mailchimp_cli
from .exceptions import AccessDenied, AccessNotConfigured, TablesMissing, TablesMissingError
from .field_specs import FieldSpec
from .layout import DEFAULT_FLASH_CATEGORIES
from .models import Models, models_for
from .pages import blueprint
from .sources import ContactSource, MergeFieldsSpec, TagsSpec
from .status import member_status
from .store import SettingsStore
from .tables import require_tables

#: Every config key the extension reads, with its default. Documented in the README.
DEFAULT_CONFIG: Mapping[str, Any] = {
    # Base URL of the Mailchimp API; None means https://<dc>.api.mailchimp.com/3.0/.
    "MAILCHIMP_SYNC_API_URL": None,
    # Fernet key for the API key at rest; None derives one from SECRET_KEY.
    "MAILCHIMP_SYNC_ENCRYPTION_KEY": None,
    # Seconds any single Mailchimp call may take before it is abandoned.
    "MAILCHIMP_SYNC_TIMEOUT": 30.0,
    # Where the staff page lives in the host app.
    "MAILCHIMP_SYNC_URL_PREFIX": "/preferences/integrations/mailchimp",
    # The host template the pages extend (it must render the blocks title and content).
    "MAILCHIMP_SYNC_BASE_TEMPLATE": "mailchimp_sync/base.html",
    # Who may show the staff pages in a frame (CSP frame-ancestors); None sends no header.
    "MAILCHIMP_SYNC_FRAME_ANCESTORS": "'none'",
    # The flash category of each kind of message (success, info, warning, error), for
    # the host's layout to style; the defaults are Bootstrap's alert names.
    "MAILCHIMP_SYNC_FLASH_CATEGORIES": DEFAULT_FLASH_CATEGORIES,
    # The shop's public address (https://shop.example); set, Connect registers a webhook
    # so unsubscribes in Mailchimp reach the shop at once.
    "MAILCHIMP_SYNC_PUBLIC_URL": None,
    # Redis for the job queue; None falls back to REDIS_URL, and with neither (or with
    # False, whatever REDIS_URL says) jobs run in-process.
    "MAILCHIMP_SYNC_REDIS_URL": None,
    # The RQ queue's name.
    "MAILCHIMP_SYNC_QUEUE": "mailchimp_sync",
    # Calls in flight to one Mailchimp account (Mailchimp allows 10): from this process,
    # or from every process together when Redis is configured.
    "MAILCHIMP_SYNC_MAX_CONNECTIONS": 10,
    # Seconds a call's slot of that budget outlives a killed worker (Redis only);
    # None: twice MAILCHIMP_SYNC_TIMEOUT, plus 5.
    "MAILCHIMP_SYNC_CONNECTION_LEASE": None,
    # Retries of a throttled, failed or timed-out call, and the first backoff in seconds.
    "MAILCHIMP_SYNC_MAX_RETRIES": 5,
    "MAILCHIMP_SYNC_RETRY_BACKOFF": 0.5,
    # Seconds a sync's audience lock lives without a heartbeat (a dead worker's expires).
    "MAILCHIMP_SYNC_LOCK_TIMEOUT": 900,
    # Above this many changes to existing members in one go, send them as one batch
    # operation (/batches) instead of one request each.
    "MAILCHIMP_SYNC_BATCH_THRESHOLD": 20,
    # Days delivered real-time changes are kept in the outbox before pruning.
    "MAILCHIMP_SYNC_OUTBOX_RETENTION": 7,
    # The newest runs whose lists of skipped, blocked and failed contacts are kept
    # (older runs keep their counts); None keeps every list.
    "MAILCHIMP_SYNC_RUN_LISTS_KEPT": 50,
    # Failed delivery attempts after which the page shows changes as failing.
    "MAILCHIMP_SYNC_OUTBOX_FAILED_AFTER": 5,
    # Contacts read from a host model per query.
    "MAILCHIMP_SYNC_CHUNK_SIZE": 1000,
    # Read the next chunk's links on a second connection while a Sync checks the chunk
    # before (not on SQLite): see engine/read_ahead.py.
    "MAILCHIMP_SYNC_READ_AHEAD": True,
}


class MailchimpSync:
    """Keeps a Flask shop's contacts in Mailchimp.

    ::

        db = SQLAlchemy()
        mailchimp = MailchimpSync(db=db)
        mailchimp.add_source(Customer, role="customer", email="email",
                             marketing="accepts_marketing")

        def create_app():
            app = Flask(__name__)
            db.init_app(app)
            mailchimp.init_app(app)
            return app

    :param app: register on this app right away (otherwise call :meth:`init_app`).
    :param db: the host's Flask-SQLAlchemy object; the extension's tables join its
        metadata and its writes join the host's session.
    :param register_blueprint: add the staff page to the app (at
        ``MAILCHIMP_SYNC_URL_PREFIX``); turn off to register :data:`.pages.blueprint`
        yourself.
    """

    def __init__(
        self, app: Flask | None = None, *, db: SQLAlchemy, register_blueprint: bool = True
    ) -> None:
        if not isinstance(db, SQLAlchemy):
            raise TypeError("MailchimpSync(db=...) takes the host's flask_sqlalchemy.SQLAlchemy.")
        self.db = db
        self.models: Models = models_for(db)
        self.sources: list[ContactSource] = []
        self.register_blueprint = register_blueprint
        self._authorize: Callable[[], Any] | None = None
        #: Functions adding variables the host's layout needs to the pages' context.
        self.context_processors: list[Callable[[], Mapping[str, Any] | None]] = []
        self._watches: dict[type, Any] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on *app*: config defaults, state and the CLI."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "MailchimpSync is already registered on this app; call init_app once per app."
            )
        for key, value in DEFAULT_CONFIG.items():
            app.config.setdefault(key, copy.copy(value))  # a host may change a dict in place
        public_url.check(app.config)
        app.extensions[EXTENSION_KEY] = AppState(extension=self)

        logs.setup()  # the package's modules are imported by now: their loggers exist
        realtime.attach(self)
        app.cli.add_command(mailchimp_cli)
        app.add_template_global(self.member_status, "mailchimp_status")
        prefix = app.config["MAILCHIMP_SYNC_URL_PREFIX"]
        if self.register_blueprint:
            app.register_blueprint(blueprint, url_prefix=prefix)
        app.register_blueprint(webhooks.blueprint, url_prefix=prefix)
        _exempt_from_csrf(app, webhooks.blueprint)

    def authorize(self, check: Callable[[], Any]) -> Callable[[], Any]:
        """Register who may use the staff pages (a decorator).

        *check* runs before every page with the request context available. It returns
        ``True`` to allow, ``False`` to refuse (403), or a response to send instead, such
        as a redirect to the host's login page. Without a check the pages answer 403.
        """
        self._authorize = check
        return check

    def context_processor(
        self, processor: Callable[[], Mapping[str, Any] | None]
    ) -> Callable[[], Mapping[str, Any] | None]:
        """Register variables the host's layout needs on the extension's pages (a decorator).

        *processor* returns a dict, like a Flask context processor; use it for what the
        host's own views pass to every page (a menu, the shop's name)::

            @mailchimp.context_processor
            def layout_variables():
                return {"nav_items": main_menu()}
        """
        self.context_processors.append(processor)
        return processor

    def check_access(self) -> Any:
        """``None`` when the current request may use the pages; else a response (or 403).

        Past the host's check, the pages also need the extension's tables.
        """
        if self._authorize is None:
            raise AccessNotConfigured()
        verdict = self._authorize()
        if verdict is False or verdict is None:
            raise AccessDenied()
        if verdict is not True:
            return verdict
        try:
            self.check_ready()
        except TablesMissingError as problem:
            current_app.logger.error("%s", problem)
            raise TablesMissing(problem) from None
        return None

    def check_ready(self) -> None:
        """Raise :class:`ConfigurationError` (:class:`TablesMissingError` for the tables)
        unless the tables exist and every source's paths lead somewhere (app context)."""
        require_tables(self)
        for source in self.sources:
            source.resolve()

    def add_source(
        self,
        model: type,
        *,
        role: str,
        email: FieldSpec,
        marketing: FieldSpec,
        first_name: FieldSpec | None = None,
        last_name: FieldSpec | None = None,
        merge_fields: MergeFieldsSpec | None = None,
        tags: TagsSpec | None = None,
        set_marketing: Callable[[Any, bool], None] | None = None,
        watch: Mapping[type, Callable[[Any], Any]] | None = None,
        label: Callable[[Any], str | None] | None = None,
        url: Callable[[Any], str | None] | None = None,
    ) -> ContactSource:
        """Register *model*'s rows as contacts of *role* (``"customer"``, ``"consignor"``...).

        Each field is an attribute name (dotted paths follow relationships), a SQL
        expression or a callable taking the instance; see :mod:`.sources`.
        *merge_fields* is a dict of :class:`~.merge_fields.MergeField` declarations by
        merge tag (typed values, fields the page and ``flask mailchimp fields`` can create
        in Mailchimp), or a callable returning a dict of extra merge fields as they are.
        *tags* is a callable returning the names of the tags a contact should have; the
        shop adds and removes those, and never removes a tag it did not set.
        *set_marketing* (``(instance, value)``) writes the flag when someone unsubscribes
        in Mailchimp and *marketing* is not an attribute path that can be written.
        *watch* maps models more than one relationship away that a field reads to a
        callable giving the contact instance (or instances) a changed row concerns, so
        real-time updates follow them (the source's own model and the models one
        relationship away are watched without it).
        *label* names a contact on the staff pages (default: its first and last name,
        else its address); *url* gives the address of its page in the shop, so staff
        can fix it from a sync report (default: no link). Both take the instance and
        are called inside a request.
        """
        source = ContactSource(
            model,
            role=role,
            email=email,
            marketing=marketing,
            first_name=first_name,
            last_name=last_name,
            merge_fields=merge_fields,
            tags=tags,
            set_marketing=set_marketing,
            watch=watch,
            label=label,
            url=url,
        )
        if any(existing.name == source.name for existing in self.sources):
            raise ValueError(f"{model.__name__} is already registered for role {role!r}.")
        longest = bounds.limit(self.models.StagedContact, "source")
        if len(source.name) > longest:
            raise ValueError(
                f"{model.__name__} cannot be a source for role {role!r}: a source's name "
                f"(the role, a colon and the table's name) is stored in at most {longest} "
                f"characters, and {source.name[:40]!r}... has {len(source.name)}. Use a "
                "shorter role name."
            )
        self.sources.append(source)
        self._watches = None
        return source

    def watches_by_model(self) -> dict[type, Any]:
        """The host models whose changes are delivered in real time (computed once)."""
        if self._watches is None:
            self._watches = realtime.watches_by_model(self)
        return self._watches

    @property
    def roles(self) -> list[str]:
        """Every registered role, in registration order."""
        return list(dict.fromkeys(source.role for source in self.sources))

    def sources_for(self, role: str) -> list[ContactSource]:
        return [source for source in self.sources if source.role == role]

    def member_status(self, instance: Any) -> Any:
        """What Mailchimp holds for a host contact (a template global: ``mailchimp_status``)."""
        return member_status(self, instance)

    def settings_store(self) -> SettingsStore:
        """Settings for the current app (needs an app context)."""
        state = app_state(current_app)
        if state.extension is not self:
            raise RuntimeError("The current app is registered with another MailchimpSync object.")
        return SettingsStore(self.models, self.db.session(), current_app.config)


def _exempt_from_csrf(app: Flask, blueprint: Any) -> None:
    """Mailchimp cannot send a CSRF token: its webhook is guarded by the secret in its URL.

    Works whether the host set up CSRFProtect before or after this extension.
    """

    def exempt() -> None:
        csrf = app.extensions.get("csrf")
        if csrf is not None and blueprint not in csrf._exempt_blueprints:
            csrf.exempt(blueprint)

    exempt()
    app.before_request_funcs.setdefault(None, []).insert(0, exempt)
