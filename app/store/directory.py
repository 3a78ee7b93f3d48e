"""Teammates, teams, memberships and roles: the rows behind the snapshot, and the bulk writes
that the baseline sync and the webhook applier make to them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, Update, and_, bindparam, delete, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from app.store.models import Membership, Role, Team, User

# The fields of a teammate that come from Intercom and are served to C1.
USER_FIELDS = (
    "name",
    "email",
    "job_title",
    "has_inbox_seat",
    "away_mode_enabled",
    "away_mode_reassign",
    "role_id",
    "account_type",
)
AWAY_FIELDS = ("away_mode_enabled", "away_mode_reassign")


@dataclass
class StoredUser:
    id: str
    fields: dict[str, Any]
    removed_at: datetime | None
    event_watermark: int | None
    away_watermark: int | None
    event_applied_at: datetime | None
    last_login_at: datetime | None
    last_logout_at: datetime | None

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass
class Directory:
    """Everything the store holds about the workspace, loaded for a diff."""

    users: dict[str, StoredUser] = field(default_factory=dict)
    teams: dict[str, str | None] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)  # (team_id, user_id)
    roles: dict[str, str | None] = field(default_factory=dict)


_USER_COLUMNS = (
    User.id,
    *(getattr(User, name) for name in USER_FIELDS),
    User.removed_at,
    User.event_watermark,
    User.away_watermark,
    User.event_applied_at,
    User.last_login_at,
    User.last_logout_at,
)


def _stored_user(row: Any) -> StoredUser:
    return StoredUser(
        id=row.id,
        fields={name: getattr(row, name) for name in USER_FIELDS},
        removed_at=row.removed_at,
        event_watermark=row.event_watermark,
        away_watermark=row.away_watermark,
        event_applied_at=row.event_applied_at,
        last_login_at=row.last_login_at,
        last_logout_at=row.last_logout_at,
    )


def load_directory(session: Session) -> Directory:
    directory = Directory()
    for row in session.execute(select(*_USER_COLUMNS)):
        directory.users[row.id] = _stored_user(row)
    directory.teams = {row.id: row.name for row in session.execute(select(Team.id, Team.name))}
    directory.memberships = {
        (row.team_id, row.user_id)
        for row in session.execute(select(Membership.team_id, Membership.user_id))
    }
    directory.roles = {row.id: row.name for row in session.execute(select(Role.id, Role.name))}
    return directory


# The webhook applier runs these once or more per event, so they are built once and run on the
# session's connection (Core): building a statement and going through the ORM's execution path
# cost several times more than the query itself. No ORM-mapped teammate, team or membership
# objects live in these sessions, so there is nothing for the ORM to flush or synchronize.
_USER_TABLE = cast(Table, User.__table__)
_MEMBERSHIP_TABLE = cast(Table, Membership.__table__)
_GET_USER = select(*_USER_COLUMNS).where(User.id == bindparam("user_id"))
_USER_TEAM_IDS = select(Membership.team_id).where(Membership.user_id == bindparam("user_id"))
_KNOWN_TEAM_IDS = select(Team.id).where(Team.id.in_(bindparam("team_ids", expanding=True)))


def _insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Bulk insert (one executemany per set of keys, as the ORM's bulk insert groups them)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    connection = session.connection()
    for group in groups.values():
        connection.execute(insert(table), group)


def get_user(session: Session, user_id: str) -> StoredUser | None:
    row = session.connection().execute(_GET_USER, {"user_id": user_id}).one_or_none()
    return _stored_user(row) if row is not None else None


def user_team_ids(session: Session, user_id: str) -> set[str]:
    return set(session.connection().execute(_USER_TEAM_IDS, {"user_id": user_id}).scalars())


def known_team_ids(session: Session, team_ids: Iterable[str]) -> set[str]:
    wanted = list(set(team_ids))
    if not wanted:
        return set()
    return set(session.connection().execute(_KNOWN_TEAM_IDS, {"team_ids": wanted}).scalars())


def insert_users(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        _insert_rows(session, _USER_TABLE, rows)


def update_users(session: Session, rows: list[dict[str, Any]]) -> None:
    """Update many users; every row must carry the same keys, with `id` naming the row."""
    if not rows:
        return
    keys = [key for key in rows[0] if key != "id"]
    statement = (
        update(User)
        .where(User.id == bindparam("b_id"))
        .values({key: bindparam(f"b_{key}") for key in keys})
    )
    session.connection().execute(
        statement, [{f"b_{key}": value for key, value in row.items()} for row in rows]
    )


def upsert_teams(
    session: Session, new: dict[str, str | None], changed: dict[str, str | None], *, version: int
) -> None:
    if new:
        session.execute(
            insert(Team),
            [{"id": tid, "name": name, "updated_version": version} for tid, name in new.items()],
        )
    if changed:
        session.connection().execute(
            update(Team)
            .where(Team.id == bindparam("b_id"))
            .values(name=bindparam("b_name"), updated_version=version),
            [{"b_id": tid, "b_name": name} for tid, name in changed.items()],
        )


def delete_teams(session: Session, team_ids: Iterable[str]) -> None:
    ids = list(team_ids)
    if ids:
        session.execute(delete(Membership).where(Membership.team_id.in_(ids)))
        session.execute(delete(Team).where(Team.id.in_(ids)))


def add_memberships(session: Session, pairs: Iterable[tuple[str, str]]) -> None:
    # In primary-key order: appending to the index costs SQLite a fifth less than inserting
    # all over it (a baseline adds ~50,000 at once).
    rows = [{"team_id": team_id, "user_id": user_id} for team_id, user_id in sorted(pairs)]
    if rows:
        _insert_rows(session, _MEMBERSHIP_TABLE, rows)


def remove_memberships(session: Session, pairs: Iterable[tuple[str, str]]) -> None:
    items = list(pairs)
    # Chunked: SQLite caps the number of bound parameters per statement.
    for start in range(0, len(items), 400):
        chunk = items[start : start + 400]
        session.execute(
            delete(Membership).where(tuple_(Membership.team_id, Membership.user_id).in_(chunk))
        )


def upsert_roles(
    session: Session, new: dict[str, str | None], changed: dict[str, str | None], *, version: int
) -> None:
    if new:
        session.execute(
            insert(Role),
            [{"id": rid, "name": name, "updated_version": version} for rid, name in new.items()],
        )
    if changed:
        session.connection().execute(
            update(Role)
            .where(Role.id == bindparam("b_id"))
            .values(name=bindparam("b_name"), updated_version=version),
            [{"b_id": rid, "b_name": name} for rid, name in changed.items()],
        )


def delete_roles(session: Session, role_ids: Iterable[str]) -> None:
    ids = list(role_ids)
    if ids:
        session.execute(delete(Role).where(Role.id.in_(ids)))


def unused_role_ids(session: Session) -> set[str]:
    """Roles no active teammate holds any more (roles are only known through holders)."""
    held = select(User.role_id).where(and_(User.role_id.is_not(None), User.removed_at.is_(None)))
    return set(session.execute(select(Role.id).where(Role.id.not_in(held))).scalars())


def touch_users(session: Session, user_ids: Iterable[str], *, version: int) -> None:
    ids = list(user_ids)
    for start in range(0, len(ids), 500):
        session.execute(
            update(User)
            .where(or_(*[User.id.in_(ids[start : start + 500])]))
            .values(updated_version=version)
        )


@lru_cache(maxsize=64)
def _update_user_statement(keys: tuple[str, ...]) -> Update:
    return (
        update(_USER_TABLE)
        .where(_USER_TABLE.c.id == bindparam("b_id"))
        .values({key: bindparam(f"b_{key}") for key in keys})
    )


def update_user(session: Session, user_id: str, values: dict[str, Any]) -> None:
    if not values:
        return
    statement = _update_user_statement(tuple(values))
    params = {f"b_{key}": value for key, value in values.items()}
    params["b_id"] = user_id
    session.connection().execute(statement, params)
