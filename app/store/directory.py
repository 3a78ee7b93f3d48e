"""Teammates, teams, memberships and roles: the rows behind the snapshot, and the bulk writes
that the baseline sync and the inbox drainer make to them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import (
    Connection,
    String,
    Table,
    bindparam,
    delete,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import (
    AddConstraint,
    CreateIndex,
    DropConstraint,
    DropIndex,
    ExecutableDDLElement,
)

from app.store.bulk import bulk_insert, driver_rows, typed_driver_rows
from app.store.models import Membership, Role, Team, User
from app.store.versioning import note_teammates_inserted, note_teammates_updated

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
# An email is an identity, never clipped to fit: a teammate whose email is longer
# than its column is kept as it was and reported, not stored with a cut address.
MAX_EMAIL_LENGTH = cast(String, User.__table__.c.email.type).length or 0


# How far past the receiving clock a notification's `created_at` (or any sign-in time) may lie:
# a little for clocks that disagree, never the far future, which would become a
# watermark that hides every genuine notification after it.
MAX_FUTURE_SKEW = timedelta(minutes=5)


def lies_in_future(when: datetime, now: datetime) -> bool:
    """Whether `when` (a notification's time, a sign-in time from any source) is later than
    `now` allows: such a time is refused, never stored."""
    return when > now + MAX_FUTURE_SKEW


def unstorable_reason(fields: dict[str, Any]) -> str | None:
    """Why a teammate with these (parsed, sanitised) fields cannot be stored, or None."""
    email = fields.get("email")
    if email is not None and len(email) > MAX_EMAIL_LENGTH:
        return (
            f"its email is {len(email)} characters long, more than the {MAX_EMAIL_LENGTH} the "
            "store holds; it is never cut short, so the teammate was left as it was"
        )
    return None


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


STORED_USER_COLUMNS = (
    User.id,
    *(getattr(User, name) for name in USER_FIELDS),
    User.removed_at,
    User.event_watermark,
    User.away_watermark,
    User.event_applied_at,
    User.last_login_at,
    User.last_logout_at,
)


def stored_user(row: Any) -> StoredUser:
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


_ALL_USERS = select(*STORED_USER_COLUMNS)
_ALL_TEAMS = select(Team.id, Team.name)
_ALL_ROLES = select(Role.id, Role.name)
_ALL_MEMBERSHIPS = select(Membership.team_id, Membership.user_id)
# `load_directory` builds StoredUser positionally from STORED_USER_COLUMNS' order.
assert [column.key for column in STORED_USER_COLUMNS[len(USER_FIELDS) + 1 :]] == [
    f.name for f in dataclasses.fields(StoredUser)[2:]
]


def load_directory(session: Session) -> Directory:
    """The whole directory, for a baseline's diff: ~60,000 rows at 10k teammates, so as the
    driver's own tuples rather than through SQLAlchemy's result rows (a large part of a
    no-change baseline's apply went there). Teammates' values go through their columns'
    result processors (booleans, UTC datetimes), skipped for NULL, which they return as is."""
    connection = session.connection()
    users: dict[str, StoredUser] = {}
    split = len(USER_FIELDS) + 1
    for row in typed_driver_rows(connection, _ALL_USERS):
        users[row[0]] = StoredUser(
            row[0], dict(zip(USER_FIELDS, row[1:split], strict=True)), *row[split:]
        )
    return Directory(
        users=users,
        teams=dict(connection.execute(_ALL_TEAMS).all()),
        memberships=set(driver_rows(connection, _ALL_MEMBERSHIPS)),
        roles=dict(connection.execute(_ALL_ROLES).all()),
    )


_USER_TABLE = cast(Table, User.__table__)
_MEMBERSHIP_TABLE = cast(Table, Membership.__table__)
_TEAM_TABLE = cast(Table, Team.__table__)
_USER_FIELD_VALUES = itemgetter(*USER_FIELDS)


def insert_users(
    session: Session, users: Iterable[tuple[str, dict[str, Any]]], *, version: int
) -> None:
    """Insert new teammates from (id, fields) with every USER_FIELDS, as parsed from Intercom:
    plain str, bool and None values, which both drivers bind as the columns' own processors
    would (SQLite stores a bool as 0/1 either way), so no processing per row is needed."""
    # In primary-key order: SQLite appends to its B-tree instead of splitting pages all over.
    rows = [
        (uid, *_USER_FIELD_VALUES(fields), version)
        for uid, fields in sorted(users, key=itemgetter(0))
    ]
    if rows:
        note_teammates_inserted(session, map(itemgetter(0), rows))
        bulk_insert(
            session,
            _USER_TABLE,
            ("id", *USER_FIELDS, "updated_version"),
            rows,
        )


def insert_user_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert teammates from rows of column values; every row must carry the same keys."""
    if not rows:
        return
    note_teammates_inserted(session, (row["id"] for row in rows))
    session.connection().execute(insert(_USER_TABLE), rows)


def update_users(session: Session, rows: list[dict[str, Any]]) -> None:
    """Update many users; every row must carry the same keys, with `id` naming the row."""
    if not rows:
        return
    keys = [key for key in rows[0] if key != "id"]
    note_teammates_updated(
        session, [row["id"] for row in rows], sets_removed_at="removed_at" in keys
    )
    statement = (
        update(User)
        .where(User.id == bindparam("b_id"))
        .values({key: bindparam(f"b_{key}") for key in keys})
    )
    session.connection().execute(
        statement, [{f"b_{key}": value for key, value in row.items()} for row in rows]
    )


def users_to_look_at(session: Session, now: datetime) -> tuple[set[str], set[str]]:
    """(teammates no baseline has listed yet, teammates with a watermark, sign-in, sign-out or
    removal time past `now` plus the allowed skew): few or none, so asked of the store in one
    scan rather than found among every teammate loaded for a diff. The second kind is what an
    earlier release let a far-future notification write."""
    limit = now + MAX_FUTURE_SKEW
    limit_ts = int(limit.timestamp())
    in_future = or_(
        User.event_watermark > limit_ts,
        User.away_watermark > limit_ts,
        User.last_login_at > limit,
        User.last_logout_at > limit,
        User.removed_at > limit,
    )
    query = select(User.id, User.seen_by_baseline, in_future).where(
        or_(User.seen_by_baseline.is_(False), in_future)
    )
    unseen: set[str] = set()
    future: set[str] = set()
    for user_id, seen, ahead in session.connection().execute(query):
        if not seen:
            unseen.add(user_id)
        if ahead:
            future.add(user_id)
    return unseen, future


def mark_seen_by_baseline(session: Session, user_ids: Iterable[str]) -> None:
    """A baseline listed these teammates: they are no ghosts (see `User.seen_by_baseline`)."""
    ids = sorted(user_ids)
    for start in range(0, len(ids), 400):
        session.execute(
            update(User).where(User.id.in_(ids[start : start + 400])).values(seen_by_baseline=True)
        )


def delete_users(session: Session, user_ids: Iterable[str]) -> None:
    """Delete teammates outright, with their memberships (no tombstone is kept)."""
    ids = sorted(user_ids)
    # Whether each was in the workspace, so that deleting a tombstone logs no grant change.
    note_teammates_updated(session, ids, sets_removed_at=True)
    for start in range(0, len(ids), 400):
        chunk = ids[start : start + 400]
        session.execute(delete(Membership).where(Membership.user_id.in_(chunk)))
        session.execute(delete(User).where(User.id.in_(chunk)))


def upsert_teams(
    session: Session, new: dict[str, str | None], changed: dict[str, str | None], *, version: int
) -> None:
    if new:
        bulk_insert(
            session,
            _TEAM_TABLE,
            ("id", "name", "updated_version"),
            [(tid, name, version) for tid, name in sorted(new.items())],
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


# Below this many rows, checking each one as it goes in costs less than the rebuild below.
BULK_LOAD_MIN_ROWS = 5_000


def add_memberships(
    session: Session, pairs: Iterable[tuple[str, str]], *, into_empty_store: bool = False
) -> None:
    """Insert memberships. `into_empty_store`: the caller's transaction began on a store with
    no teammates and no memberships (a first baseline), so a large insert may suspend the
    table's upkeep (see `_suspend_membership_upkeep`) and redo it once at the end."""
    # In primary-key order: appending to the index costs SQLite a fifth less than inserting
    # all over it (a baseline adds ~50,000 at once). Grouped by team and each team's members
    # sorted as plain strings: several times cheaper than sorting the pairs as tuples.
    by_team: dict[str, list[str]] = {}
    for team_id, user_id in pairs:
        by_team.setdefault(team_id, []).append(user_id)
    rows = [
        (team_id, user_id) for team_id in sorted(by_team) for user_id in sorted(by_team[team_id])
    ]
    if not rows:
        return
    connection = session.connection()
    suspended: list[ExecutableDDLElement] = []
    if into_empty_store and len(rows) >= BULK_LOAD_MIN_ROWS:
        suspended = _suspend_membership_upkeep(connection)
    bulk_insert(session, _MEMBERSHIP_TABLE, ("team_id", "user_id"), rows)
    for restore in suspended:
        connection.execute(restore)


def _suspend_membership_upkeep(connection: Connection) -> list[ExecutableDDLElement]:
    """Drop what makes each inserted membership expensive and return the DDL that puts it
    back, to run after the insert in the same transaction (DDL is transactional on both
    backends, so a failed baseline rolls it back with everything else).

    SQLite: rows arrive in primary-key order but in random `user_id` order, so each lands on
    another page of `ix_membership_user_id`; at 50k teammates (250,000 rows) that index
    outgrows the page cache and its upkeep dominated the insert. CREATE INDEX sorts once.

    PostgreSQL: the two foreign keys are checked by a trigger per row, each a lookup that also
    locks the team and teammate rows: most of the insert. ADD CONSTRAINT validates all rows
    with one join. Dropping a foreign key takes ACCESS EXCLUSIVE locks on the three tables
    until the commit, so they are taken NOWAIT first: if any reader holds one, the insert goes
    the ordinary way (waiting could deadlock with a reader that goes on to another of these
    tables); once held, readers queue behind this transaction, which only happens on an empty
    store where there is nothing for them to read yet.
    """
    if connection.dialect.name == "sqlite":
        indexes = sorted(_MEMBERSHIP_TABLE.indexes, key=lambda index: str(index.name))
        for index in indexes:
            connection.execute(DropIndex(index))
        return [CreateIndex(index) for index in indexes]
    if connection.dialect.name != "postgresql":
        return []
    tables = ", ".join(
        connection.dialect.identifier_preparer.format_table(table)
        for table in (_TEAM_TABLE, _USER_TABLE, _MEMBERSHIP_TABLE)
    )
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE NOWAIT")
    except OperationalError:
        return []
    constraints = sorted(
        _MEMBERSHIP_TABLE.foreign_key_constraints, key=lambda constraint: str(constraint.name)
    )
    for constraint in constraints:
        connection.execute(DropConstraint(constraint))
    return [AddConstraint(constraint) for constraint in constraints]


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
