"""Teammates, teams, memberships and roles: the rows behind the snapshot, and the bulk writes
that the baseline sync and the webhook applier make to them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, tuple_, update
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


def get_user(session: Session, user_id: str) -> StoredUser | None:
    row = session.execute(select(*_USER_COLUMNS).where(User.id == user_id)).one_or_none()
    return _stored_user(row) if row is not None else None


def user_team_ids(session: Session, user_id: str) -> set[str]:
    return set(
        session.execute(select(Membership.team_id).where(Membership.user_id == user_id)).scalars()
    )


def known_team_ids(session: Session, team_ids: Iterable[str]) -> set[str]:
    wanted = list(set(team_ids))
    if not wanted:
        return set()
    return set(session.execute(select(Team.id).where(Team.id.in_(wanted))).scalars())


def insert_users(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(User), rows)


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
    rows = [{"team_id": team_id, "user_id": user_id} for team_id, user_id in pairs]
    if rows:
        session.execute(insert(Membership), rows)


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


def update_user(session: Session, user_id: str, values: dict[str, Any]) -> None:
    session.execute(update(User).where(User.id == user_id).values(values))
