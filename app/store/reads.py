"""Reads behind the C1 API: the whole snapshot in one consistent transaction, and the single
resources and keyset pages of the paginated views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import starmap
from typing import Any, NamedTuple, TypeAlias, cast

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.store.bulk import driver_rows, typed_driver_rows
from app.store.models import Membership, Role, Team, User
from app.store.read_errors import NotSynced
from app.store.versioning import StoreHeader, read_header

AnyRow: TypeAlias = Row[*tuple[Any, ...]]

USER_COLUMNS = (
    User.id,
    User.name,
    User.email,
    User.job_title,
    User.has_inbox_seat,
    User.away_mode_enabled,
    User.away_mode_reassign,
    User.role_id,
    User.account_type,
    User.last_login_at,
    User.removed_at,
    User.last_login_method,
)


class SnapshotUser(NamedTuple):
    """A teammate as the snapshot reads it: the columns of USER_COLUMNS, as a plain tuple.

    SQLAlchemy's Row answers `row.id` in Python and compares and hashes in Python too; a
    snapshot build reads a few attributes of every teammate several times and keys its memo
    on the whole row, which made Row access a visible part of a rebuild (docs/performance.md)."""

    id: str
    name: str | None
    email: str | None
    job_title: str | None
    has_inbox_seat: bool | None
    away_mode_enabled: bool | None
    away_mode_reassign: bool | None
    role_id: str | None
    account_type: str | None
    last_login_at: datetime | None
    removed_at: datetime | None
    last_login_method: str | None


assert SnapshotUser._fields == tuple(column.key for column in USER_COLUMNS)


@dataclass
class SnapshotRows:
    header: StoreHeader
    users: Sequence[Any]  # SnapshotUser, or anything with its attributes
    teams: Sequence[AnyRow]
    memberships: Sequence[tuple[str, str]]  # (team_id, user_id)
    roles: Sequence[AnyRow]


_SNAPSHOT_MEMBERSHIPS = select(Membership.team_id, Membership.user_id).order_by(
    Membership.team_id, Membership.user_id
)


def read_snapshot(session: Session, *, include_removed: bool) -> SnapshotRows:
    """Everything served, read inside the caller's (read) transaction.

    On the session's connection (Core rows, not the ORM's result machinery): these reads are
    tens of thousands of rows for a large workspace and run after every change."""
    header = read_header(session)
    connection = session.connection()
    users_query = select(*USER_COLUMNS).order_by(User.id)
    if not include_removed:
        users_query = users_query.where(User.removed_at.is_(None))
    return SnapshotRows(
        header=header,
        users=list(starmap(SnapshotUser, typed_driver_rows(connection, users_query))),
        teams=connection.execute(select(Team.id, Team.name).order_by(Team.id)).all(),
        memberships=cast(list[tuple[str, str]], driver_rows(connection, _SNAPSHOT_MEMBERSHIPS)),
        roles=connection.execute(select(Role.id, Role.name).order_by(Role.id)).all(),
    )


def read_user(session: Session, user_id: str) -> tuple[AnyRow, list[str]] | None:
    row = session.execute(select(*USER_COLUMNS).where(User.id == user_id)).one_or_none()
    if row is None:
        return None
    team_ids = list(
        session.execute(
            select(Membership.team_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.team_id)
        ).scalars()
    )
    return row, team_ids


def read_team(session: Session, team_id: str) -> tuple[AnyRow, list[str]] | None:
    row = session.execute(select(Team.id, Team.name).where(Team.id == team_id)).one_or_none()
    if row is None:
        return None
    return row, team_member_ids(session, team_id)


def teammate_is_active(session: Session, user_id: str) -> bool | None:
    """Whether the store holds `user_id` as an active teammate; None when it does not know it."""
    row = session.execute(select(User.removed_at).where(User.id == user_id)).first()
    if row is None:
        return None
    return row.removed_at is None


def has_team(session: Session, team_id: str) -> bool:
    return session.execute(select(Team.id).where(Team.id == team_id)).first() is not None


def has_role(session: Session, role_id: str) -> bool:
    return session.execute(select(Role.id).where(Role.id == role_id)).first() is not None


def team_member_ids(
    session: Session, team_id: str, *, after: str | None = None, limit: int | None = None
) -> list[str]:
    query = select(Membership.user_id).where(Membership.team_id == team_id)
    if after is not None:
        query = query.where(Membership.user_id > after)
    query = query.order_by(Membership.user_id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


def page_users(
    session: Session, *, after: str | None, limit: int, include_removed: bool
) -> tuple[Sequence[AnyRow], dict[str, list[str]]]:
    """A keyset page of users (by id) with their team ids."""
    query = select(*USER_COLUMNS).order_by(User.id).limit(limit)
    if after is not None:
        query = query.where(User.id > after)
    if not include_removed:
        query = query.where(User.removed_at.is_(None))
    rows = session.execute(query).all()
    teams: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        for team_id, user_id in session.execute(
            select(Membership.team_id, Membership.user_id)
            .where(Membership.user_id.in_(list(teams)))
            .order_by(Membership.team_id)
        ):
            teams[user_id].append(team_id)
    return rows, teams


def page_teams(
    session: Session, *, after: str | None, limit: int
) -> tuple[Sequence[AnyRow], dict[str, list[str]]]:
    query = select(Team.id, Team.name).order_by(Team.id).limit(limit)
    if after is not None:
        query = query.where(Team.id > after)
    rows = session.execute(query).all()
    members: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        for team_id, user_id in session.execute(
            select(Membership.team_id, Membership.user_id)
            .where(Membership.team_id.in_(list(members)))
            .order_by(Membership.user_id)
        ):
            members[team_id].append(user_id)
    return rows, members


def page_roles(
    session: Session, *, after: str | None, limit: int, only: str | None = None
) -> tuple[Sequence[AnyRow], dict[str, list[str]]]:
    query = select(Role.id, Role.name).order_by(Role.id).limit(limit)
    if after is not None:
        query = query.where(Role.id > after)
    if only is not None:
        query = query.where(Role.id == only)
    rows = session.execute(query).all()
    holders: dict[str, list[str]] = {row.id: [] for row in rows}
    if rows:
        for user_id, role_id in session.execute(
            select(User.id, User.role_id)
            .where(User.role_id.in_(list(holders)), User.removed_at.is_(None))
            .order_by(User.id)
        ):
            holders[str(role_id)].append(user_id)
    return rows, holders


def role_holder_ids(session: Session, role_id: str, *, after: str | None, limit: int) -> list[str]:
    """A keyset page of the current teammates holding `role_id`, by user id."""
    query = select(User.id).where(User.role_id == role_id, User.removed_at.is_(None))
    if after is not None:
        query = query.where(User.id > after)
    return list(session.execute(query.order_by(User.id).limit(limit)).scalars())


def page_memberships(
    session: Session, *, after: tuple[str, str] | None, limit: int
) -> Sequence[AnyRow]:
    """Keyset page over (team_id, user_id): the team-member grants."""
    query = select(Membership.team_id, Membership.user_id).order_by(
        Membership.team_id, Membership.user_id
    )
    if after is not None:
        team_id, user_id = after
        query = query.where(
            (Membership.team_id > team_id)
            | ((Membership.team_id == team_id) & (Membership.user_id > user_id))
        )
    return session.execute(query.limit(limit)).all()


def page_role_holders(
    session: Session, *, after: tuple[str, str] | None, limit: int
) -> Sequence[AnyRow]:
    """Keyset page over (role_id, user_id): the role-assignment grants."""
    query = (
        select(User.role_id, User.id)
        .where(User.role_id.is_not(None), User.removed_at.is_(None))
        .order_by(User.role_id, User.id)
    )
    if after is not None:
        role_id, user_id = after
        query = query.where(
            (User.role_id > role_id) | ((User.role_id == role_id) & (User.id > user_id))
        )
    return session.execute(query.limit(limit)).all()


def active_user_ids(session: Session, *, after: str | None, limit: int) -> list[str]:
    """A keyset page of the active teammates' ids: the workspace's members (its grants)."""
    query = select(User.id).where(User.removed_at.is_(None))
    if after is not None:
        query = query.where(User.id > after)
    return list(session.execute(query.order_by(User.id).limit(limit)).scalars())


def require_synced(header: StoreHeader) -> None:
    """Refuse to answer from a store no baseline has filled: an empty answer would read as
    'everyone lost access'."""
    if header.last_sync_at is None:
        raise NotSynced
