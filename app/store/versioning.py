"""The store version and the change log: every committed change bumps one monotonic version and
records what changed at that version, in the same transaction (reliability rule R14).

The version lives in the single `store_state` row, with when the store last synced and last
heard a webhook, the workspace, the cursor key and how far the change log was pruned; every
read and lock of that row is here. Writers first lock it, which also serializes them on
PostgreSQL, so versions commit in order and a change-feed reader never sees version N+1 before N.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import cast

from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.orm import Session

from app.store.bulk import bulk_insert, bulk_value
from app.store.models import ChangeLogEntry, StoreState, User, utcnow

USER = "user"
TEAM = "team"
ROLE = "role"
WORKSPACE = "workspace"
GRANT = "grant"
UPSERT = "upsert"
DELETE = "delete"


def membership_grant_id(team_id: str, user_id: str) -> str:
    return f"team:{team_id}:member:user:{user_id}"


def role_grant_id(role_id: str, user_id: str) -> str:
    return f"role:{role_id}:assigned:user:{user_id}"


def workspace_grant_id(workspace_id: str, user_id: str) -> str:
    return f"workspace:{workspace_id}:member:user:{user_id}"


@dataclass
class ChangeSet:
    """What one transaction changed; the last operation on a resource wins."""

    ops: dict[tuple[str, str], str] = field(default_factory=dict)

    def upsert(self, resource_type: str, resource_id: str) -> None:
        self.ops[(resource_type, resource_id)] = UPSERT

    def delete(self, resource_type: str, resource_id: str) -> None:
        self.ops[(resource_type, resource_id)] = DELETE

    def upsert_many(self, resource_type: str, resource_ids: Iterable[str]) -> None:
        """`upsert` for each id, at C speed (a first baseline records ~60,000)."""
        self.ops.update(dict.fromkeys(zip(repeat(resource_type), resource_ids), UPSERT))

    def merge(self, other: ChangeSet) -> None:
        self.ops.update(other.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __len__(self) -> int:
        return len(self.ops)


_THE_ROW = StoreState.id == 1


@dataclass(frozen=True)
class StoreHeader:
    """The `store_state` columns a read states alongside what it read."""

    version: int
    version_at: datetime | None
    last_sync_at: datetime | None
    last_webhook_at: datetime | None
    workspace_id: str | None
    workspace_name: str | None
    workspace_region: str | None
    cursor_key: str
    change_log_pruned_through: int


def read_header(session: Session) -> StoreHeader:
    """The header, in one SELECT of its columns (every snapshot and page request reads it)."""
    row = session.execute(
        select(
            StoreState.version,
            StoreState.version_at,
            StoreState.last_sync_at,
            StoreState.last_webhook_at,
            StoreState.workspace_id,
            StoreState.workspace_name,
            StoreState.workspace_region,
            StoreState.cursor_key,
            StoreState.change_log_pruned_through,
        ).where(_THE_ROW)
    ).one()
    return StoreHeader(**row._mapping)


def lock_store_state(session: Session) -> StoreState:
    """Take the writer lock (row lock on PostgreSQL; SQLite already holds BEGIN IMMEDIATE)."""
    statement = select(StoreState).where(_THE_ROW)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    state = session.execute(statement).scalar_one()
    return state


def read_store_state(session: Session) -> StoreState:
    """The row itself, unlocked: to read it whole, or to set a column that no version depends
    on (`last_sync_at`) in a transaction that already holds the writer lock."""
    return session.execute(select(StoreState).where(_THE_ROW)).scalar_one()


def current_version(session: Session) -> int:
    return int(session.execute(select(StoreState.version).where(_THE_ROW)).scalar_one())


# The workspace `member` grant is held by every active teammate, so it changes
# exactly when a teammate joins or leaves: whatever path writes that (a baseline, a webhook, a
# removal C1 asks for), the grant's change must land in the same version as the teammate's.
# It is recorded here, at the two points every such path passes through: the teammate writes
# in app.store.directory note, before they run, whether each teammate they touch was active
# when this transaction first touched them; `record_changes` then compares that with the
# teammate's own change (`upsert`: active now, `delete`: not) and logs the grant's change
# when the two differ. A note is the transaction's own (`session.info`; a write session
# lives for one transaction), and stays true through a rolled-back savepoint, since it is
# the state before any write of this transaction.
_MEMBERSHIP_BEFORE = "intercom_sync.workspace_membership_before"
# Noted for a teammate whose writes so far in this transaction left `removed_at` alone.
_UNTOUCHED = None


def _membership_notes(session: Session) -> dict[str, bool | None]:
    notes: dict[str, bool | None] = session.info.setdefault(_MEMBERSHIP_BEFORE, {})
    return notes


def note_teammates_inserted(session: Session, user_ids: Iterable[str]) -> None:
    """Teammates about to be inserted: not in the workspace before (a tombstone inserted as
    removed stays out of it, and its `delete` compares equal)."""
    notes = _membership_notes(session)
    for user_id in user_ids:
        notes.setdefault(user_id, False)


_ACTIVE_AMONG = select(User.id).where(
    User.id.in_(bindparam("ids", expanding=True)), User.removed_at.is_(None)
)


def note_teammates_updated(
    session: Session, user_ids: Collection[str], *, sets_removed_at: bool
) -> None:
    """Teammates about to be updated. Only an update that sets `removed_at` can move one in or
    out of the workspace; for those, the state before is read from the store (the first such
    write of the transaction sees it as the transaction found it)."""
    notes = _membership_notes(session)
    if not sets_removed_at:
        for user_id in user_ids:
            notes.setdefault(user_id, _UNTOUCHED)
        return
    # Not noted yet, or noted as untouched: the store still holds the state before.
    unknown = [user_id for user_id in user_ids if notes.get(user_id) is None]
    connection = session.connection()
    # Chunked: SQLite caps the bound parameters of one statement.
    for start in range(0, len(unknown), 500):
        chunk = unknown[start : start + 500]
        active = set(connection.execute(_ACTIVE_AMONG, {"ids": chunk}).scalars())
        for user_id in chunk:
            notes[user_id] = user_id in active


def _record_workspace_grants(session: Session, state: StoreState, changes: ChangeSet) -> None:
    """Add the workspace grant's change for every teammate who joined or left (see above). A
    teammate changed without a note (a write that bypassed app.store.directory) gets the
    grant's change as well: an upsert or delete that changes nothing is harmless, a missing
    one would leave C1 with a stale grant."""
    notes = session.info.pop(_MEMBERSHIP_BEFORE, {})
    workspace_id = state.workspace_id
    if workspace_id is None:
        # No baseline has named the workspace yet; the one that does grants every active
        # teammate then (`set_workspace`).
        return
    grants: dict[tuple[str, str], str] = {}
    missing = object()
    for (resource_type, user_id), op in changes.ops.items():
        if resource_type != USER:
            continue
        before = notes.get(user_id, missing)
        if before is _UNTOUCHED or before == (op == UPSERT):
            continue
        grants[(GRANT, workspace_grant_id(workspace_id, user_id))] = op
    changes.ops.update(grants)


def set_workspace(
    session: Session,
    state: StoreState,
    changes: ChangeSet,
    *,
    workspace_id: str,
    name: str | None,
    region: str | None,
) -> None:
    """Store the workspace as `GET /me` describes it. Its resource (and with it the `member`
    entitlement, named after it) changes when it is first learned and when it is renamed or
    moves region. When the id is first learned, every teammate already active gets the
    `member` grant: webhooks may have added teammates before the id was known (with
    INTERCOM_WORKSPACE_ID set), and their grants had no id to be logged under then. Call it
    after the transaction's teammate writes."""
    first = state.workspace_id is None
    if first or state.workspace_name != name or state.workspace_region != region:
        changes.upsert(WORKSPACE, workspace_id)
    if first:
        active = session.execute(select(User.id).where(User.removed_at.is_(None))).scalars()
        changes.upsert_many(GRANT, [workspace_grant_id(workspace_id, uid) for uid in active])
    state.workspace_id = workspace_id
    state.workspace_name = name
    state.workspace_region = region


def record_changes(
    session: Session, state: StoreState, changes: ChangeSet, *, at: datetime | None = None
) -> int:
    """Bump the version once for `changes` and log them; returns the version now current.

    An empty change set leaves the version (and so every ETag) untouched. The log rows go in
    ordered by type, then id, through the driver in one go: a first baseline logs ~60,000.
    Teammates who joined or left also log their workspace grant (see above)."""
    _record_workspace_grants(session, state, changes)
    if not changes:
        return state.version
    new_version = state.version + 1
    when = at or utcnow()
    state.version = new_version
    state.version_at = when
    table = cast(Table, ChangeLogEntry.__table__)
    at_value = bulk_value(session, table.c.at, when)  # bound once, not once per row
    # Sorting each type's ids as plain strings is several times cheaper than comparing tuples.
    by_type: dict[str, list[tuple[str, str]]] = {}
    for (resource_type, resource_id), op in changes.ops.items():
        by_type.setdefault(resource_type, []).append((resource_id, op))
    rows = [
        (new_version, resource_type, resource_id, op, at_value)
        for resource_type in sorted(by_type)
        for resource_id, op in sorted(by_type[resource_type], key=itemgetter(0))
    ]
    bulk_insert(
        session,
        table,
        ("version", "resource_type", "resource_id", "op", "at"),
        rows,
    )
    session.flush()
    return new_version


@dataclass(frozen=True)
class ChangeRow:
    version: int
    resource_type: str
    resource_id: str
    op: str
    at: datetime


def changes_since(session: Session, *, since: int, limit: int) -> list[ChangeRow]:
    """Changes after version `since`, in order, whole versions only: a page never ends in the
    middle of a version, so `next_since` can always be the last version returned."""
    rows = list(
        session.execute(
            select(
                ChangeLogEntry.version,
                ChangeLogEntry.resource_type,
                ChangeLogEntry.resource_id,
                ChangeLogEntry.op,
                ChangeLogEntry.at,
            )
            .where(ChangeLogEntry.version > since)
            .order_by(ChangeLogEntry.version, ChangeLogEntry.id)
            .limit(limit + 1)
        )
    )
    if len(rows) > limit:
        last_version = rows[limit].version
        complete = [row for row in rows[:limit] if row.version != last_version]
        if complete:
            rows = complete
        else:
            # One version larger than the page: return it whole rather than split it.
            rows = list(
                session.execute(
                    select(
                        ChangeLogEntry.version,
                        ChangeLogEntry.resource_type,
                        ChangeLogEntry.resource_id,
                        ChangeLogEntry.op,
                        ChangeLogEntry.at,
                    )
                    .where(ChangeLogEntry.version == last_version)
                    .order_by(ChangeLogEntry.id)
                )
            )
    return [ChangeRow(r.version, r.resource_type, r.resource_id, r.op, r.at) for r in rows]


def prune_change_log(session: Session, *, older_than: datetime) -> int:
    """Drop log rows older than the retention; remembers the newest version dropped so that
    `/changes?since=` below it answers 410."""
    newest_dropped = session.execute(
        select(func.max(ChangeLogEntry.version)).where(ChangeLogEntry.at < older_than)
    ).scalar_one_or_none()
    if newest_dropped is None:
        return 0
    state = lock_store_state(session)
    result = session.execute(delete(ChangeLogEntry).where(ChangeLogEntry.version <= newest_dropped))
    state.change_log_pruned_through = max(state.change_log_pruned_through, int(newest_dropped))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
