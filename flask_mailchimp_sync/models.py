# The classes are built at run time for the host's db, which mypy cannot follow.
# mypy: disable-error-code="has-type,attr-defined"
"""The extension's tables, created in the host's database through the host's ``db``.

The classes are defined when the extension is constructed (never at import) on a
private declarative base that shares the host's metadata: ``create_all`` and Alembic see
them, and the host's session writes them in the host's transaction. They never inherit
the host's ``model_class``, whose extra columns (an ``id`` on every table, NOT NULL
timestamps) would break them. Every table name starts with ``mailchimp_sync_``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import orm

#: Every row belongs to a store; one store for now. Multi-store hosts add more keys later
#: without touching the sync, which reads settings only through this key.
DEFAULT_STORE = "default"

#: The audience of a staged row that marks a linked contact as absent from a run's
#: snapshot (deleted, or no longer sendable); no audience has this id.
ABSENT = ""

#: The life of a sync run.
RUN_STATES = ("queued", "running", "done", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands times back naive)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Models:
    """The model classes bound to one host ``db``."""

    Settings: Any
    RoleAudience: Any
    MemberState: Any
    ContactState: Any
    StagedContact: Any
    Lock: Any
    Outbox: Any
    SyncRun: Any
    SyncRunItem: Any
    Delivery: Any


_models_by_db: weakref.WeakKeyDictionary[SQLAlchemy, Models] = weakref.WeakKeyDictionary()


def models_for(db: SQLAlchemy) -> Models:
    """Return the extension's models for *db*, defining them on first use.

    Cached per ``db`` because a table can be declared only once in a metadata.
    """
    if db not in _models_by_db:
        _models_by_db[db] = _define(db)
    return _models_by_db[db]


def _define(db: SQLAlchemy) -> Models:
    Timestamp = sa.DateTime(timezone=True)

    class Base(orm.DeclarativeBase):
        metadata = db.metadata

    class MailchimpSettings(Base):
        """The connected Mailchimp account and the shop's options, one row per store."""

        __tablename__ = "mailchimp_sync_settings"

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, unique=True, default=DEFAULT_STORE)
        #: Fernet token of the API key (see crypto.py); never the key itself.
        api_key_encrypted = sa.Column(sa.Text)
        data_center = sa.Column(sa.String(16))
        account_id = sa.Column(sa.String(64))
        account_name = sa.Column(sa.String(255))
        connected_at = sa.Column(Timestamp)
        double_opt_in = sa.Column(sa.Boolean, nullable=False, default=False)
        realtime = sa.Column(sa.Boolean, nullable=False, default=True)
        #: The secret in the webhook's URL (compared in constant time).
        webhook_secret = sa.Column(sa.String(64))
        #: Apply Mailchimp "profile" events (name changes) to the shop's contacts.
        profile_updates = sa.Column(sa.Boolean, nullable=False, default=False)
        #: The hour (UTC) of the daily Sync, or ``None`` when there is none.
        daily_sync_hour = sa.Column(sa.Integer)
        webhook_last_event = sa.Column(sa.String(255))
        webhook_last_event_at = sa.Column(Timestamp)
        audiences = orm.relationship(
            lambda: MailchimpRoleAudience,
            back_populates="settings",
            cascade="all, delete-orphan",
            order_by=lambda: MailchimpRoleAudience.role,
        )

        @property
        def is_connected(self) -> bool:
            return bool(self.api_key_encrypted)

        @property
        def masked_api_key(self) -> str | None:
            return f"••••-{self.data_center}" if self.is_connected else None

        def audience_for(self, role: str) -> Any:
            return next((a for a in self.audiences if a.role == role), None)

    class MailchimpRoleAudience(Base):
        """Which audience a role's contacts go to, and the tag that marks them there."""

        __tablename__ = "mailchimp_sync_audiences"
        __table_args__ = (sa.UniqueConstraint("settings_id", "role"),)

        id = sa.Column(sa.Integer, primary_key=True)
        settings_id = sa.Column(
            sa.Integer, sa.ForeignKey("mailchimp_sync_settings.id"), nullable=False
        )
        role = sa.Column(sa.String(100), nullable=False)
        audience_id = sa.Column(sa.String(32), nullable=False)
        audience_name = sa.Column(sa.String(255))
        tag = sa.Column(sa.String(100))
        #: When the audience's member changes were last read from Mailchimp.
        pulled_at = sa.Column(Timestamp)
        #: When the staff's first Sync of this audience finished: real-time deliveries
        #: to it start only then.
        first_synced_at = sa.Column(Timestamp)
        #: The audience's merge tags, comma-separated, as read at the last Sync (what a
        #: real-time delivery may send without asking Mailchimp again).
        merge_tags = sa.Column(sa.Text)
        #: The id of the webhook the shop registered on this audience, if any.
        webhook_id = sa.Column(sa.String(32))
        settings = orm.relationship(lambda: MailchimpSettings, back_populates="audiences")

    class MailchimpMemberState(Base):
        """What the shop knows of one member of one audience.

        ``sent`` marks members the shop itself put there with consent: only those are
        ever archived by the shop. ``fingerprint`` is the data last sent (or found
        equal in Mailchimp), which makes syncs incremental. ``status`` is Mailchimp's,
        as last seen: subscribed, pending, unsubscribed, cleaned, transactional or
        archived.
        """

        __tablename__ = "mailchimp_sync_members"
        __table_args__ = (sa.UniqueConstraint("store", "audience_id", "subscriber_hash"),)

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, default=DEFAULT_STORE)
        audience_id = sa.Column(sa.String(32), nullable=False)
        subscriber_hash = sa.Column(sa.String(32), nullable=False)
        email = sa.Column(sa.String(255), nullable=False)
        status = sa.Column(sa.String(20))
        sent = sa.Column(sa.Boolean, nullable=False, default=False)
        archived_by_shop = sa.Column(sa.Boolean, nullable=False, default=False)
        fingerprint = sa.Column(sa.String(64))
        #: The role tags the shop applied, comma-separated, to remove one when a role ends.
        tags = sa.Column(sa.Text, nullable=False, default="")
        status_changed_at = sa.Column(Timestamp)
        synced_at = sa.Column(Timestamp)
        last_error = sa.Column(sa.Text)

    class MailchimpContactState(Base):
        """Which member a shop contact was last sent as, so an email change moves it."""

        __tablename__ = "mailchimp_sync_contacts"
        __table_args__ = (
            sa.UniqueConstraint("store", "source", "contact_key"),
            # Looked up by contact (every page of a sync) without knowing its source.
            sa.Index("ix_mailchimp_sync_contacts_key", "contact_key"),
            # Looked up by member: its contacts, for deliveries, webhooks and resyncs.
            sa.Index("ix_mailchimp_sync_contacts_member", "audience_id", "subscriber_hash"),
        )

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, default=DEFAULT_STORE)
        source = sa.Column(sa.String(200), nullable=False)
        contact_key = sa.Column(sa.String(64), nullable=False)
        audience_id = sa.Column(sa.String(32), nullable=False)
        subscriber_hash = sa.Column(sa.String(32), nullable=False)
        #: The contact's own data when last handled: an unchanged contact is skipped.
        fingerprint = sa.Column(sa.String(64))

    class MailchimpStagedContact(Base):
        """A run's snapshot of the shop's contacts, grouped by the database, not in memory."""

        __tablename__ = "mailchimp_sync_staged"
        __table_args__ = (
            sa.Index("ix_mailchimp_sync_staged_member", "run_id", "audience_id", "subscriber_hash"),
            sa.Index("ix_mailchimp_sync_staged_contact", "run_id", "source", "contact_key"),
        )

        id = sa.Column(sa.Integer, primary_key=True)
        run_id = sa.Column(sa.Integer, nullable=False)
        audience_id = sa.Column(sa.String(32), nullable=False)
        subscriber_hash = sa.Column(sa.String(32), nullable=False)
        email = sa.Column(sa.String(255), nullable=False)
        source = sa.Column(sa.String(200), nullable=False)
        contact_key = sa.Column(sa.String(64), nullable=False)
        tag = sa.Column(sa.String(100), nullable=False)
        marketing = sa.Column(sa.Boolean, nullable=False)
        #: JSON of the merge fields (FNAME, LNAME and the source's extras).
        merge_fields = sa.Column(sa.Text, nullable=False)
        #: The contact's computed tags, comma-separated (the role's tag is ``tag``).
        tags = sa.Column(sa.Text, nullable=False, default="")
        #: Of this contact's data (address, consent, tag, merge fields).
        fingerprint = sa.Column(sa.String(64), nullable=False)

    class MailchimpOutbox(Base):
        """A contact changed in the shop, written in the same transaction as the change.

        Delivered (by a drain, or covered by a full sync) rows are pruned after
        ``MAILCHIMP_SYNC_OUTBOX_RETENTION`` days; undelivered ones are kept until delivered.
        """

        __tablename__ = "mailchimp_sync_outbox"
        __table_args__ = (
            sa.Index("ix_mailchimp_sync_outbox_pending", "delivered_at", "next_attempt_at"),
        )

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, default=DEFAULT_STORE)
        source = sa.Column(sa.String(200), nullable=False)
        contact_key = sa.Column(sa.String(64), nullable=False)
        created_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        delivered_at = sa.Column(Timestamp)
        attempts = sa.Column(sa.Integer, nullable=False, default=0)
        next_attempt_at = sa.Column(Timestamp)
        last_error = sa.Column(sa.Text)
        #: For a deleted contact: the member it was last sent as (its link is gone).
        audience_id = sa.Column(sa.String(32))
        subscriber_hash = sa.Column(sa.String(32))
        #: The sync that found this row committed when it began reading the shop: the
        #: change is in what that sync read, so its success delivers the row.
        seen_by_run = sa.Column(sa.Integer)

    class MailchimpLock(Base):
        """One sync per audience at a time, across processes; a lock expires by itself."""

        __tablename__ = "mailchimp_sync_locks"

        name = sa.Column(sa.String(100), primary_key=True)
        holder = sa.Column(sa.String(64), nullable=False)
        expires_at = sa.Column(Timestamp, nullable=False)

    class OutcomeCounts:
        """How many members a run or a delivery counted of each outcome."""

        added = sa.Column(sa.Integer, nullable=False, default=0)
        updated = sa.Column(sa.Integer, nullable=False, default=0)
        archived = sa.Column(sa.Integer, nullable=False, default=0)
        unchanged = sa.Column(sa.Integer, nullable=False, default=0)
        #: Addresses left alone because no contact of theirs has the marketing flag.
        not_opted_in = sa.Column(sa.Integer, nullable=False, default=0)
        blocked = sa.Column(sa.Integer, nullable=False, default=0)
        skipped = sa.Column(sa.Integer, nullable=False, default=0)
        failed = sa.Column(sa.Integer, nullable=False, default=0)

    class MailchimpSyncRun(OutcomeCounts, Base):
        """One sync (or preview): its state, progress and outcome counts."""

        __tablename__ = "mailchimp_sync_runs"

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, default=DEFAULT_STORE)
        state = sa.Column(sa.String(16), nullable=False, default="queued")
        role = sa.Column(sa.String(100))
        dry_run = sa.Column(sa.Boolean, nullable=False, default=False)
        full = sa.Column(sa.Boolean, nullable=False, default=False)
        trigger = sa.Column(sa.String(32))
        #: What the run is doing now, for the progress display.
        phase = sa.Column(sa.String(64))
        #: Comma-separated IDs of the audiences the run covers (and locks).
        audiences = sa.Column(sa.Text, nullable=False, default="")
        queued_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        started_at = sa.Column(Timestamp)
        finished_at = sa.Column(Timestamp)
        total = sa.Column(sa.Integer, nullable=False, default=0)
        processed = sa.Column(sa.Integer, nullable=False, default=0)
        error = sa.Column(sa.Text)
        #: What staff should know of a run that went through: an audience lacking a
        #: declared merge field, say. One sentence a line.
        notes = sa.Column(sa.Text)

    class MailchimpDelivery(OutcomeCounts, Base):
        """One real-time delivery: the changed contacts sent, and what came of them.

        Not a sync: deliveries have their own history (the real-time panel) and are
        pruned after ``MAILCHIMP_SYNC_OUTBOX_RETENTION`` days.
        """

        __tablename__ = "mailchimp_sync_deliveries"

        id = sa.Column(sa.Integer, primary_key=True)
        store = sa.Column(sa.String(64), nullable=False, default=DEFAULT_STORE)
        state = sa.Column(sa.String(16), nullable=False, default="running")
        started_at = sa.Column(Timestamp, nullable=False, default=utcnow)
        finished_at = sa.Column(Timestamp)
        #: Changed contacts (outbox rows) the delivery took.
        changes = sa.Column(sa.Integer, nullable=False, default=0)
        error = sa.Column(sa.Text)

    class MailchimpSyncRunItem(Base):
        """A contact a run or delivery skipped, found blocked or failed to send, and why."""

        __tablename__ = "mailchimp_sync_run_items"

        id = sa.Column(sa.Integer, primary_key=True)
        run_id = sa.Column(sa.Integer, sa.ForeignKey("mailchimp_sync_runs.id"), index=True)
        delivery_id = sa.Column(
            sa.Integer,
            sa.ForeignKey("mailchimp_sync_deliveries.id", ondelete="CASCADE"),
            index=True,
        )
        outcome = sa.Column(sa.String(16), nullable=False)
        source = sa.Column(sa.String(200))
        contact_key = sa.Column(sa.String(64))
        email = sa.Column(sa.String(255))
        reason = sa.Column(sa.Text, nullable=False)
        run = orm.relationship(lambda: MailchimpSyncRun)

    return Models(
        Settings=MailchimpSettings,
        RoleAudience=MailchimpRoleAudience,
        MemberState=MailchimpMemberState,
        ContactState=MailchimpContactState,
        StagedContact=MailchimpStagedContact,
        Lock=MailchimpLock,
        Outbox=MailchimpOutbox,
        SyncRun=MailchimpSyncRun,
        SyncRunItem=MailchimpSyncRunItem,
        Delivery=MailchimpDelivery,
    )
