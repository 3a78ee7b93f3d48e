"""SQLAlchemy models of the store. Every schema change comes with an alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StoreState(Base):
    """The single row that carries the store version and workspace facts."""

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    workspace_id: Mapped[str | None] = mapped_column(String(128))
    workspace_name: Mapped[str | None] = mapped_column(String(512))
    workspace_region: Mapped[str | None] = mapped_column(String(16))
    # When the current version was committed: the snapshot's `synced_at`.
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    change_log_pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)
    cursor_key: Mapped[str] = mapped_column(String(128))


class User(Base):
    """An Intercom teammate ("admin"). A removed teammate stays as a tombstone (`removed_at`)."""

    __tablename__ = "user"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    email: Mapped[str | None] = mapped_column(String(512))
    job_title: Mapped[str | None] = mapped_column(String(512))
    has_inbox_seat: Mapped[bool] = mapped_column(Boolean, default=False)
    away_mode_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    away_mode_reassign: Mapped[bool] = mapped_column(Boolean, default=False)
    role_id: Mapped[str | None] = mapped_column(String(64))
    account_type: Mapped[str] = mapped_column(String(16), default="human")
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # `metadata.sign_in_method` of the sign-in behind `last_login_at`, e.g. "email_password".
    last_login_method: Mapped[str | None] = mapped_column(String(64))
    last_logout_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # `created_at` of the newest state notification applied (ordering rule).
    event_watermark: Mapped[int | None] = mapped_column(BigInteger)
    # The same for the away-mode fields, which `admin.away_mode_updated` changes on its own.
    away_watermark: Mapped[int | None] = mapped_column(BigInteger)
    # When a notification last changed this row, so an older baseline fetch cannot roll it back.
    event_applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_version: Mapped[int] = mapped_column(BigInteger, default=0)
    # False while only webhooks have announced the teammate: a baseline that does not list
    # such a "ghost" drops it without counting it toward the mass-removal brake.
    seen_by_baseline: Mapped[bool] = mapped_column(Boolean, server_default=true())

    # One role's holders (GET /api/v1/roles/{id}/members, the role grants), by user id.
    __table_args__ = (Index("ix_user_role_id", "role_id", "id"),)


class Team(Base):
    __tablename__ = "team"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    updated_version: Mapped[int] = mapped_column(BigInteger, default=0)


class Membership(Base):
    """One teammate in one team: a `team:{team_id}:member` grant."""

    __tablename__ = "membership"

    team_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("team.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index("ix_membership_user_id", "user_id"),)


class Role(Base):
    """An Intercom role (API 2.16+), known through the teammates that hold it."""

    __tablename__ = "role"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    updated_version: Mapped[int] = mapped_column(BigInteger, default=0)


class ChangeLogEntry(Base):
    """One changed user, team, role or grant, with the store version that change produced."""

    __tablename__ = "change_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(300))
    op: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_change_log_version", "version"),)


class SyncRun(Base):
    """One baseline run. `active` is 1 while queued or running, NULL otherwise: its unique
    constraint makes "one run at a time" hold across every process sharing the database."""

    __tablename__ = "sync_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True)
    owner: Mapped[str | None] = mapped_column(String(128))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    version_before: Mapped[int | None] = mapped_column(BigInteger)
    version_after: Mapped[int | None] = mapped_column(BigInteger)
    # Items the run could not store and left as they were: [{"resource_type", "id", "reason"}].
    warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Structured detail of a failure, e.g. a blocked run's {"would_remove": [...]}.
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_sync_run_status", "status"),)


class WebhookEvent(Base):
    """The durable inbox: every signed delivery, kept raw for inspection and replay."""

    __tablename__ = "webhook_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    notification_id: Mapped[str | None] = mapped_column(String(255))
    topic: Mapped[str | None] = mapped_column(String(255))
    app_id: Mapped[str | None] = mapped_column(String(128))
    item_id: Mapped[str | None] = mapped_column(String(64))
    notification_created_at: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        UniqueConstraint("notification_id", name="uq_webhook_event_notification_id"),
        Index("ix_webhook_event_status_created", "status", "notification_created_at"),
        Index("ix_webhook_event_received_at", "received_at"),
    )


class ProvisioningRequest(Base):
    """One call of a provisioning endpoint: written before Intercom is called and
    finished after, so an interrupted request still shows who asked for what."""

    __tablename__ = "provisioning_request"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # NULL while the request is in progress.
    result: Mapped[str | None] = mapped_column(String(32))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # First 12 hex digits of sha256(token): tells tokens apart, never reveals one.
    requested_by: Mapped[str] = mapped_column(String(12))
    # Freed (set NULL) when the answer was a transient failure, so a retry may reuse the key.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # sha256 of what was asked (method, path, dry run, body): a key reused for another request
    # is refused rather than answered with the first request's result.
    request_hash: Mapped[str] = mapped_column(String(64))
    intercom_method: Mapped[str | None] = mapped_column(String(8))
    intercom_path: Mapped[str | None] = mapped_column(Text)
    intercom_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    intercom_status: Mapped[int | None] = mapped_column(Integer)
    # The HTTP status this service answered with, replayed with the body for a repeated key.
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "idempotency_key", "requested_by", name="uq_provisioning_request_idempotency"
        ),
    )


class AccessEvent(Base):
    """One access event from Intercom's admin activity log, keyed by the log
    entry's own id, so re-reading a window or a webhook of the same entry stores it once."""

    __tablename__ = "access_event"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_email: Mapped[str | None] = mapped_column(String(512))
    actor_ip: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    # Stored as Intercom sent it: its shape is documented for few activity types.
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    source: Mapped[str] = mapped_column(String(16))  # "log" or "webhook"
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_access_event_at_id", "at", "id"),
        Index("ix_access_event_user_at", "user_id", "at", "id"),
        Index("ix_access_event_type_at", "type", "at", "id"),
    )


class ActivityLogCursor(Base):
    """The single row recording how far Intercom's activity log has been read."""

    __tablename__ = "activity_log_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Every entry created up to this moment has been read and applied.
    read_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last read's failure (`activity_log_failing` / `activity_log_forbidden`), or None.
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    entries_read: Mapped[int] = mapped_column(BigInteger, default=0)
