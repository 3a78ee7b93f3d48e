"""The webhook inbox: deliveries are stored (deduplicated by Intercom's notification id under a
unique constraint, reliability rule R3) before they are answered, and applied later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store.models import WebhookEvent


class InboxStatus(StrEnum):
    """Where a stored delivery stands; the value is what the `status` column holds and what
    /webhook-events serves as `outcome`."""

    PENDING = "pending"  # waiting for the inbox drainer (or a retry)
    APPLIED = "applied"
    IGNORED = "ignored"  # not our workspace or topic, stale, or deferred past its attempts
    REJECTED = "rejected"  # refused: not a notification, or dated in the future
    FAILED = "failed"  # its apply kept failing until the attempts ran out


# Not a status: the /webhook-events filter for rows delivered more than once.
DUPLICATE = "duplicate"
# What /webhook-events accepts as its `status` filter.
OUTCOMES = (
    InboxStatus.PENDING,
    InboxStatus.APPLIED,
    InboxStatus.IGNORED,
    DUPLICATE,
    InboxStatus.REJECTED,
    InboxStatus.FAILED,
)


class Delivered(Protocol):
    """The envelope fields of a parsed delivery that the inbox keeps: the store knows this
    shape, not Intercom's envelope (app.intercom.notifications.Notification is one)."""

    @property
    def id(self) -> str | None: ...

    @property
    def topic(self) -> str | None: ...

    @property
    def app_id(self) -> str | None: ...

    @property
    def item_id(self) -> str | None: ...

    @property
    def created_at(self) -> int | None: ...


@dataclass(frozen=True)
class NewEvent:
    """A delivery to store. `status` is pending, ignored or rejected at receipt."""

    notification_id: str | None
    topic: str | None
    app_id: str | None
    item_id: str | None
    notification_created_at: int | None
    received_at: datetime
    status: InboxStatus
    raw_body: bytes
    error: str | None = None

    @classmethod
    def of(
        cls,
        notification: Delivered,
        raw_body: bytes,
        *,
        received_at: datetime,
        status: InboxStatus = InboxStatus.PENDING,
        error: str | None = None,
    ) -> NewEvent:
        """The inbox row for a parsed delivery."""
        return cls(
            notification_id=notification.id,
            topic=notification.topic,
            app_id=notification.app_id,
            item_id=notification.item_id,
            notification_created_at=notification.created_at,
            received_at=received_at,
            status=status,
            raw_body=raw_body,
            error=error,
        )


@dataclass(frozen=True)
class PendingEvent:
    id: int
    notification_id: str | None
    topic: str | None
    app_id: str | None
    item_id: str | None
    notification_created_at: int | None
    received_at: datetime
    attempts: int
    raw_body: bytes


def store_events(session: Session, events: list[NewEvent]) -> list[bool]:
    """Insert each delivery unless its notification id is stored already.

    Returns, per event, True when it was new and False for a duplicate (whose stored row then
    counts one more delivery)."""
    connection = session.connection()
    first_of: dict[str, int] = {}  # notification id -> index of its first delivery here
    new_rows: list[dict[str, Any]] = []
    unnamed_rows: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if event.notification_id is None:
            unnamed_rows.append(_row(event))
        elif event.notification_id not in first_of:
            first_of[event.notification_id] = index
            new_rows.append(_row(event))
    # One statement per batch (SQLAlchemy sends executemany with RETURNING as multi-row
    # INSERTs): the inbox writer stores whatever queued up while the last commit ran.
    inserted: set[str] = set()
    if new_rows:
        statement = _insert_unless_stored(session.get_bind().dialect.name)
        inserted = set(connection.execute(statement, new_rows).scalars())
    if unnamed_rows:
        connection.execute(_INSERT_EVENT, unnamed_rows)
    outcomes = [
        event.notification_id is None
        or (first_of[event.notification_id] == index and event.notification_id in inserted)
        for index, event in enumerate(events)
    ]
    repeats = [
        {"b_notification_id": event.notification_id}
        for event, new in zip(events, outcomes, strict=True)
        if not new
    ]
    if repeats:
        connection.execute(_COUNT_DELIVERY, repeats)
    return outcomes


def _row(event: NewEvent) -> dict[str, Any]:
    return {
        "notification_id": event.notification_id,
        "topic": event.topic,
        "app_id": event.app_id,
        "item_id": event.item_id,
        "notification_created_at": event.notification_created_at,
        "received_at": event.received_at,
        "status": event.status,
        "raw_body": event.raw_body,
        "error": event.error,
        "deliveries": 1,
        "attempts": 0,
        "next_attempt_at": event.received_at if event.status == InboxStatus.PENDING else None,
    }


_INSERT_EVENT = insert(WebhookEvent)
_COUNT_DELIVERY = (
    update(WebhookEvent)
    .where(WebhookEvent.notification_id == bindparam("b_notification_id"))
    .values(deliveries=WebhookEvent.deliveries + 1)
)


@lru_cache(maxsize=4)
def _insert_unless_stored(dialect: str) -> Any:
    """INSERT … ON CONFLICT (notification_id) DO NOTHING RETURNING notification_id."""
    if dialect == "postgresql":
        statement: Any = postgresql.insert(WebhookEvent)
    elif dialect == "sqlite":
        statement = sqlite.insert(WebhookEvent)
    else:  # pragma: no cover - only the two supported backends reach here
        raise RuntimeError(f"unsupported database {dialect}")
    # RETURNING, not rowcount: psycopg reports rowcount -1 for an INSERT with RETURNING, and
    # an executemany's rowcount would not say which rows went in anyway.
    return statement.on_conflict_do_nothing(index_elements=["notification_id"]).returning(
        WebhookEvent.notification_id
    )


def claim_pending(session: Session, *, limit: int, now: datetime) -> list[PendingEvent]:
    """Due pending events, oldest notification first. On PostgreSQL the rows stay locked until
    the caller's transaction ends and other replicas skip them (exactly-once application)."""
    statement = (
        select(
            WebhookEvent.id,
            WebhookEvent.notification_id,
            WebhookEvent.topic,
            WebhookEvent.app_id,
            WebhookEvent.item_id,
            WebhookEvent.notification_created_at,
            WebhookEvent.received_at,
            WebhookEvent.attempts,
            WebhookEvent.raw_body,
        )
        .where(WebhookEvent.status == InboxStatus.PENDING)
        .where(WebhookEvent.next_attempt_at <= now)
        .order_by(WebhookEvent.notification_created_at, WebhookEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True, of=WebhookEvent)
    # On the connection: plain column rows need none of the ORM's result machinery.
    return [PendingEvent(**row._mapping) for row in session.connection().execute(statement)]


def mark_events(session: Session, updates: list[dict[str, Any]]) -> None:
    """Record outcomes; each dict has id, status, error, attempts, next_attempt_at, applied_at."""
    if not updates:
        return
    session.connection().execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            error=bindparam("b_error"),
            attempts=bindparam("b_attempts"),
            next_attempt_at=bindparam("b_next_attempt_at"),
            applied_at=bindparam("b_applied_at"),
        ),
        [{f"b_{key}": value for key, value in row.items()} for row in updates],
    )


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_received_at: datetime | None


def backlog(session: Session) -> Backlog:
    count, oldest = session.execute(
        select(func.count(), func.min(WebhookEvent.received_at)).where(
            WebhookEvent.status == InboxStatus.PENDING
        )
    ).one()
    return Backlog(int(count or 0), oldest)


def list_events(session: Session, *, status: str | None, limit: int) -> list[WebhookEvent]:
    statement = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
    if status == DUPLICATE:
        statement = statement.where(WebhookEvent.deliveries > 1)
    elif status is not None:
        statement = statement.where(WebhookEvent.status == status)
    return list(session.execute(statement).scalars())


def prune_events(session: Session, *, older_than: datetime) -> int:
    """Drop settled events received before `older_than` (pending ones are always kept)."""
    result = session.execute(
        delete(WebhookEvent)
        .where(WebhookEvent.received_at < older_than)
        .where(WebhookEvent.status != InboxStatus.PENDING)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def retry_delay(attempts: int) -> timedelta:
    """Backoff between attempts at a failing or deferred event: 1 s doubling to 5 min."""
    return timedelta(seconds=min(300, 2 ** max(0, attempts - 1)))
