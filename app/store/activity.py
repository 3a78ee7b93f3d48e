"""The store side of the activity log: the read cursor, access events, last sign-ins,
and the queries behind `GET /api/v1/access-events` and the dormant-seat report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store.models import AccessEvent, ActivityLogCursor, Membership, Role, Team, User
from app.store.versioning import (
    USER,
    ChangeSet,
    lock_store_state,
    note_teammates_updated,
    record_changes,
)

_IN_CHUNK = 500
# A sign-in time more than this past the moment of reading is refused (the log
# reader and the inbox drainer alike).
MAX_FUTURE = timedelta(minutes=5)
# A sign-in the log reports within this many seconds before the stored one is taken for the
# same sign-in (a webhook told its time first): it only fills in the method.
SAME_SIGN_IN_SECONDS = 120


class LoggedEvent(Protocol):
    """An activity-log entry as the store keeps it (app.intercom.activity_log.LogEntry is one;
    the store knows this shape, not Intercom's JSON)."""

    @property
    def id(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def activity_type(self) -> str: ...

    @property
    def actor_id(self) -> str | None: ...

    @property
    def actor_email(self) -> str | None: ...

    @property
    def actor_ip(self) -> str | None: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def description(self) -> str | None: ...

    @property
    def metadata(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class CursorView:
    read_to: datetime | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    error_code: str | None
    error_message: str | None
    entries_read: int


@dataclass(frozen=True)
class SignIn:
    user_id: str
    at: datetime
    method: str | None


def read_cursor(session: Session) -> CursorView:
    row = session.get(ActivityLogCursor, 1)
    if row is None:
        return CursorView(None, None, None, None, None, 0)
    return CursorView(
        row.read_to,
        row.last_attempt_at,
        row.last_success_at,
        row.error_code,
        row.error_message,
        row.entries_read,
    )


def _cursor_row(session: Session) -> ActivityLogCursor:
    row = session.get(ActivityLogCursor, 1)
    if row is None:
        row = ActivityLogCursor(id=1, entries_read=0)
        session.add(row)
    return row


def record_attempt(session: Session, *, at: datetime) -> None:
    _cursor_row(session).last_attempt_at = at


def record_failure(session: Session, *, code: str, message: str) -> None:
    """A read failed: the cursor stays where it was."""
    row = _cursor_row(session)
    row.error_code = code
    row.error_message = message[:2000]


def advance_cursor(session: Session, *, read_to: datetime, entries: int, now: datetime) -> None:
    """Every entry up to `read_to` is applied; never moves the cursor back."""
    row = _cursor_row(session)
    if row.read_to is None or read_to > row.read_to:
        row.read_to = read_to
    row.entries_read = (row.entries_read or 0) + entries
    row.last_success_at = now


def clear_failure(session: Session) -> None:
    row = _cursor_row(session)
    row.error_code = None
    row.error_message = None


def store_access_events(
    session: Session, entries: Iterable[LoggedEvent], *, source: str, now: datetime
) -> int:
    """Insert access events, skipping ids already stored; returns how many were new."""
    rows = [
        {
            "id": e.id,
            "type": e.activity_type,
            "at": e.at,
            "actor_id": e.actor_id,
            "actor_email": e.actor_email,
            "actor_ip": e.actor_ip,
            "user_id": e.user_id,
            "description": e.description,
            "metadata": e.metadata,
            "source": source,
            "received_at": now,
        }
        for e in {entry.id: entry for entry in entries}.values()
    ]
    if not rows:
        return 0
    table = AccessEvent.__table__
    assert isinstance(table, Table)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).on_conflict_do_nothing(index_elements=["id"])
    result = session.execute(statement, rows)
    count = result.rowcount  # type: ignore[attr-defined]
    return int(count) if count is not None and count >= 0 else len(rows)


def apply_sign_ins(session: Session, sign_ins: Mapping[str, SignIn]) -> int:
    """Set each teammate's last sign-in where `sign_ins` has a newer one (newest wins), with
    its method; bump the store version once and log the changed teammates. Teammates not in
    the store are skipped. Returns how many teammates changed."""
    if not sign_ins:
        return 0
    state = lock_store_state(session)
    changes = write_sign_ins(session, sign_ins, version=state.version + 1)
    record_changes(session, state, changes)
    return len(changes)


def write_sign_ins(session: Session, sign_ins: Mapping[str, SignIn], *, version: int) -> ChangeSet:
    """The row writes of `apply_sign_ins`, stamped `version`, for a caller that bumps the
    version itself (the inbox drainer); returns the changed teammates."""
    changes = ChangeSet()
    if not sign_ins:
        return changes
    ids = sorted(sign_ins)
    current: dict[str, tuple[datetime | None, str | None, datetime | None]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for row in session.execute(
            select(User.id, User.last_login_at, User.last_login_method, User.removed_at).where(
                User.id.in_(chunk)
            )
        ):
            current[row.id] = (row.last_login_at, row.last_login_method, row.removed_at)
    updates: list[dict[str, Any]] = []
    for user_id, (stored_at, stored_method, removed_at) in current.items():
        sign_in = sign_ins[user_id]
        if stored_at is None or sign_in.at > stored_at:
            new_at, new_method = sign_in.at, sign_in.method
        elif (
            stored_method is None
            and sign_in.method is not None
            and (stored_at - sign_in.at).total_seconds() <= SAME_SIGN_IN_SECONDS
        ):
            new_at, new_method = stored_at, sign_in.method
        else:
            continue
        if (new_at, new_method) == (stored_at, stored_method):
            continue
        updates.append({"uid": user_id, "at": new_at, "method": new_method})
        # A removed teammate is served only under include_removed: its change is a delete.
        if removed_at is None:
            changes.upsert(USER, user_id)
        else:
            changes.delete(USER, user_id)
    if not updates:
        return changes
    # A sign-in moves nobody in or out of the workspace: no workspace grant change.
    note_teammates_updated(session, [row["uid"] for row in updates], sets_removed_at=False)
    table = User.__table__
    assert isinstance(table, Table)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("uid"))
        .values(
            last_login_at=bindparam("at"),
            last_login_method=bindparam("method"),
            updated_version=version,
        ),
        updates,
    )
    return changes


def prune_access_events(session: Session, *, older_than: datetime) -> int:
    result = session.execute(delete(AccessEvent).where(AccessEvent.at < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def page_access_events(
    session: Session,
    *,
    since: datetime | None,
    types: Sequence[str],
    user_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[AccessEvent]:
    """Access events oldest first, keyed by (at, id)."""
    statement = select(AccessEvent)
    if since is not None:
        statement = statement.where(AccessEvent.at >= since)
    if types:
        statement = statement.where(AccessEvent.type.in_(list(types)))
    if user_id is not None:
        statement = statement.where(AccessEvent.user_id == user_id)
    if after is not None:
        at, last_id = after
        statement = statement.where(
            or_(AccessEvent.at > at, and_(AccessEvent.at == at, AccessEvent.id > last_id))
        )
    statement = statement.order_by(AccessEvent.at, AccessEvent.id).limit(limit)
    return list(session.execute(statement).scalars())


@dataclass(frozen=True)
class DormantRow:
    id: str
    name: str | None
    email: str | None
    has_inbox_seat: bool
    role_id: str | None
    account_type: str
    last_login_at: datetime | None
    last_login_method: str | None
    role_name: str | None
    teams: list[tuple[str, str | None]]  # (id, name)


def dormant_teammates(session: Session, *, signed_in_before: datetime) -> list[DormantRow]:
    """Active teammates whose last sign-in is before the cutoff or unknown, oldest first
    (never seen signing in first), then by id."""
    rows = session.execute(
        select(
            User.id,
            User.name,
            User.email,
            User.has_inbox_seat,
            User.role_id,
            User.account_type,
            User.last_login_at,
            User.last_login_method,
            Role.name.label("role_name"),
        )
        .outerjoin(Role, Role.id == User.role_id)
        .where(User.removed_at.is_(None))
        .where(or_(User.last_login_at.is_(None), User.last_login_at < signed_in_before))
        .order_by(User.last_login_at.is_not(None), User.last_login_at, User.id)
    ).all()
    teams: dict[str, list[tuple[str, str | None]]] = {r.id: [] for r in rows}
    ids = list(teams)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for user_id, team_id, team_name in session.execute(
            select(Membership.user_id, Membership.team_id, Team.name)
            .join(Team, Team.id == Membership.team_id)
            .where(Membership.user_id.in_(chunk))
            .order_by(Membership.user_id, Membership.team_id)
        ):
            teams[user_id].append((team_id, team_name))
    return [
        DormantRow(
            id=r.id,
            name=r.name,
            email=r.email,
            has_inbox_seat=bool(r.has_inbox_seat),
            role_id=r.role_id,
            account_type=r.account_type,
            last_login_at=r.last_login_at,
            last_login_method=r.last_login_method,
            role_name=r.role_name,
            teams=teams[r.id],
        )
        for r in rows
    ]
