"""The snapshot body, built and serialized once per store version (and gzip-compressed once),
then served as bytes to every poller of that version (reliability rules R15, R16)."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from app.snapshot import shapes
from app.store.engine import Database
from app.store.reads import SnapshotRows, read_header, read_snapshot


@dataclass(frozen=True)
class SnapshotBody:
    version: int
    etag: str
    raw: bytes
    gzipped: bytes


class NotSynced(Exception):
    """No baseline has succeeded yet: there is no snapshot to serve."""


def build_snapshot(rows: SnapshotRows, *, roles_enabled: bool) -> dict[str, Any]:
    """The whole state of the world at `rows.header.version` (spec §3.3)."""
    active_ids = {row.id for row in rows.users if row.removed_at is None}
    team_ids_by_user: dict[str, list[str]] = {row.id: [] for row in rows.users}
    members_by_team: dict[str, list[str]] = {row.id: [] for row in rows.teams}
    grants: list[dict[str, Any]] = []
    for team_id, user_id in rows.memberships:
        # Consistency guard: a membership is only served with both of its ends.
        if user_id in active_ids and team_id in members_by_team:
            team_ids_by_user[user_id].append(team_id)
            members_by_team[team_id].append(user_id)
            grants.append(shapes.team_grant(team_id, user_id))
    users = [
        shapes.user_object(row, team_ids_by_user[row.id], roles_enabled=roles_enabled)
        for row in rows.users
    ]
    teams = [shapes.team_object(row.id, row.name, members_by_team[row.id]) for row in rows.teams]
    entitlements = [shapes.team_entitlement(row.id, row.name) for row in rows.teams]
    header = rows.header
    body: dict[str, Any] = {
        "workspace": shapes.workspace_object(
            header.workspace_id, header.workspace_name, header.workspace_region
        ),
        "version": header.version,
        "synced_at": shapes.iso(header.version_at or header.last_sync_at),
        "resource_types": shapes.resource_types(roles_enabled=roles_enabled),
        "users": users,
        "teams": teams,
    }
    if roles_enabled:
        holders: dict[str, list[str]] = {row.id: [] for row in rows.roles}
        for row in rows.users:
            if row.role_id and row.removed_at is None and row.role_id in holders:
                holders[row.role_id].append(row.id)
        body["roles"] = [shapes.role_object(r.id, r.name, holders[r.id]) for r in rows.roles]
        entitlements += [shapes.role_entitlement(r.id, r.name) for r in rows.roles]
        grants += [
            shapes.role_grant(role_id, user_id)
            for role_id, user_ids in holders.items()
            for user_id in user_ids
        ]
    body["entitlements"] = entitlements
    body["grants"] = grants
    return body


class SnapshotCache:
    """Per process; every request checks the shared store version, so replicas follow it."""

    def __init__(self, db: Database, *, roles_enabled: bool) -> None:
        self._db = db
        self._roles_enabled = roles_enabled
        self._entries: dict[bool, SnapshotBody] = {}
        self._lock = asyncio.Lock()

    def _current(self) -> tuple[int, bool]:
        with self._db.reading() as session:
            header = read_header(session)
        return header.version, header.last_sync_at is not None

    async def get(self, *, include_removed: bool) -> SnapshotBody:
        version, synced = await run_in_threadpool(self._current)
        if not synced:
            raise NotSynced
        entry = self._entries.get(include_removed)
        if entry is not None and entry.version == version:
            return entry
        async with self._lock:
            entry = self._entries.get(include_removed)
            if entry is not None and entry.version >= version:
                return entry
            entry = await run_in_threadpool(self._build, include_removed)
            self._entries[include_removed] = entry
            return entry

    def _build(self, include_removed: bool) -> SnapshotBody:
        with self._db.reading() as session:
            rows = read_snapshot(session, include_removed=include_removed)
        raw = orjson.dumps(build_snapshot(rows, roles_enabled=self._roles_enabled))
        version = rows.header.version
        suffix = "-all" if include_removed else ""
        return SnapshotBody(
            version=version,
            etag=f'"v{version}{suffix}"',
            raw=raw,
            gzipped=gzip.compress(raw, compresslevel=6, mtime=0),
        )
