"""A baseline's diff as a pure function: what Intercom lists, against what the store holds,
gives what a run would write.

It exists apart from the reading and the writing (`app.sync.baseline`) so that the rules of a
baseline (who is added, changed, removed or kept; which memberships, teams and roles follow;
when the brake applies) can be read in one place and tested without a database, and so that
`intercom-sync sync --dry-run` prints the very plan a run writes.

What Intercom lists but the store cannot hold is left as it was and reported as a
run warning; teammates only webhooks announced ("ghosts") are removed without counting
toward the mass-removal brake; times an earlier release let lie in the future are repaired.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from app.intercom.models import (
    IntercomAdmin,
    IntercomTeam,
    IntercomWorkspace,
    user_fields_from_admin,
)
from app.store import directory as store
from app.store.versioning import (
    GRANT,
    TEAM,
    USER,
    ChangeSet,
    membership_grant_id,
)
from app.sync.guards import MassRemovalBlocked, WorkspaceChanged, mass_removal_brake, who
from app.sync.repairs import Repairs, future_repairs
from app.sync.role_plan import plan_roles

logger = logging.getLogger(__name__)

# How long a ghost's tombstone is kept after the last notification about it (the default of
# WEBHOOK_RETENTION_DAYS, which the service passes).
GHOST_TOMBSTONE_DAYS = timedelta(days=7)
_EMAIL = itemgetter("email")


@dataclass
class FetchedWorkspace:
    """What Intercom says: the workspace, its teammates and its teams, as fetched."""

    workspace: IntercomWorkspace
    admins: list[IntercomAdmin]
    teams: list[IntercomTeam]
    fetch_started_at: datetime
    roles_supported: bool


@dataclass
class StoredWorkspace:
    """What the store holds, loaded by the caller (`app.sync.baseline.load_stored`)."""

    workspace_id: str | None
    version: int
    directory: store.Directory
    # Teammates no baseline has listed yet (see `User.seen_by_baseline`).
    unseen: set[str] = field(default_factory=set)
    # Teammates with a watermark, sign-in, sign-out or removal time past the diff's `now`
    # plus the allowed skew (see `store.users_to_look_at`).
    in_future: set[str] = field(default_factory=set)


@dataclass
class SyncStats:
    users_added: int = 0
    users_updated: int = 0
    users_removed: int = 0
    teams_added: int = 0
    teams_updated: int = 0
    teams_removed: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class BaselinePlan:
    """What a baseline would write: the fetched workspace diffed against the store, before
    anything is written. `write_baseline` writes it; `intercom-sync sync --dry-run` prints it."""

    current: store.Directory
    version_before: int
    version: int  # the version the writes produce, if any
    now: datetime
    stats: SyncStats
    changes: ChangeSet
    unknown_references: int
    blocked: MassRemovalBlocked | None  # the brake, if it applies (`force` lifts it)
    new_teams: dict[str, str | None]
    renamed: dict[str, str | None]
    gone_teams: set[str]
    new_roles: dict[str, str | None]
    renamed_roles: dict[str, str | None]
    gone_roles: set[str]
    new_users: list[tuple[str, dict[str, Any]]]
    changed_rows: list[dict[str, Any]]
    pairs_added: set[tuple[str, str]]
    pairs_removed: set[tuple[str, str]]
    repairs: Repairs  # times an earlier release let lie in the future
    newly_seen: set[str]  # teammates a baseline lists for the first time
    expired_ghosts: set[str]  # ghost tombstones no delivery can still come for
    warnings: list[dict[str, str]]  # teammates left as they were, and why


def diff_baseline(
    stored: StoredWorkspace,
    fetched: FetchedWorkspace,
    *,
    now: datetime,
    max_removal_fraction: float,
    keep_ghost_tombstones_for: timedelta = GHOST_TOMBSTONE_DAYS,
) -> BaselinePlan:
    """What a baseline at `now` writes to make `stored` equal to `fetched`; reads nothing but
    its arguments. Raises WorkspaceChanged when `fetched` is another workspace than the
    store's; returns the brake in `blocked` rather than raising it (a dry run prints it)."""
    if stored.workspace_id is not None and stored.workspace_id != fetched.workspace.id_code:
        raise WorkspaceChanged(stored.workspace_id, fetched.workspace.id_code)
    version = stored.version + 1  # the version these writes produce, if any
    current = stored.directory
    changes = ChangeSet()
    stats = SyncStats()

    wanted_users = {
        admin.id: user_fields_from_admin(admin, roles_supported=fetched.roles_supported)
        for admin in fetched.admins
    }
    wanted_teams = {team.id: team.name for team in fetched.teams}
    # A webhook applied after this fetch began carries newer truth than the fetch.
    newer_by_webhook = {
        user.id
        for user in current.users.values()
        if user.event_applied_at is not None and user.event_applied_at >= fetched.fetch_started_at
    }
    # Teammates Intercom listed but the store cannot hold: left as they are, and reported.
    unstorable = _unstorable(wanted_users)
    # Rows this run leaves as they are (and, when they are active, keeps present).
    kept = newer_by_webhook | set(unstorable) if unstorable else newer_by_webhook
    warnings = [
        {"resource_type": USER, "id": uid, "reason": reason} for uid, reason in unstorable.items()
    ]
    for warning in warnings:
        logger.warning("teammate %s was left as it was: %s", warning["id"], warning["reason"])

    leaving = _leaving(
        stored, wanted_users, newer_by_webhook, now, keep_ghost_tombstones_for, max_removal_fraction
    )
    repairs = future_repairs(current, stored.in_future - leaving.expired_ghosts, now)
    for repair in repairs.served:
        if current.users[repair["id"]].active:
            changes.upsert(USER, repair["id"])
        else:
            changes.delete(USER, repair["id"])
        repair["updated_version"] = version

    new_users, changed_rows = _users(
        current, wanted_users, kept, leaving, now=now, version=version, changes=changes, stats=stats
    )
    present_users = (set(wanted_users) - kept) | {
        uid for uid in kept if uid in current.users and current.users[uid].active
    }
    usable, unknown = _memberships(
        fetched, current, wanted_users, wanted_teams, kept, present_users - kept
    )
    pairs_added = usable - current.memberships
    pairs_removed = current.memberships - usable
    changes.upsert_many(GRANT, [membership_grant_id(tid, uid) for tid, uid in pairs_added])
    for tid, uid in pairs_removed:
        changes.delete(GRANT, membership_grant_id(tid, uid))
    stats.memberships_added = len(pairs_added)
    stats.memberships_removed = len(pairs_removed)
    new_teams, renamed, gone_teams = _teams(current, wanted_teams, changes, stats)
    new_roles, renamed_roles, gone_roles = plan_roles(
        fetched.admins,
        fetched.roles_supported,
        current,
        kept,
        present_users,
        new_users,
        changed_rows,
        changes,
    )

    return BaselinePlan(
        current=current,
        version_before=stored.version,
        version=version,
        now=now,
        stats=stats,
        changes=changes,
        unknown_references=unknown,
        blocked=leaving.blocked,
        new_teams=new_teams,
        renamed=renamed,
        gone_teams=gone_teams,
        new_roles=new_roles,
        renamed_roles=renamed_roles,
        gone_roles=gone_roles,
        new_users=new_users,
        changed_rows=changed_rows,
        pairs_added=pairs_added,
        pairs_removed=pairs_removed,
        repairs=repairs,
        newly_seen=stored.unseen & wanted_users.keys(),
        expired_ghosts=leaving.expired_ghosts,
        warnings=warnings,
    )


@dataclass
class _Leaving:
    """Who a baseline removes, and whether the brake holds it back."""

    to_remove: list[str]  # active teammates Intercom no longer lists, ghosts last
    expired_ghosts: set[str]
    blocked: MassRemovalBlocked | None


def _leaving(
    stored: StoredWorkspace,
    wanted_users: dict[str, dict[str, Any]],
    newer_by_webhook: set[str],
    now: datetime,
    keep_ghost_tombstones_for: timedelta,
    max_removal_fraction: float,
) -> _Leaving:
    """Teammates only webhooks ever announced, that Intercom does not list, are ghosts (a
    stale, replayed or forged "added", or a removal of someone the store never knew). They do
    not count toward the brake, on either side of its fraction. An active ghost is removed like
    anyone else: its tombstone holds back a late or replayed "added" of the same or an earlier
    time. A ghost's tombstone is deleted outright once no delivery can plausibly still come for
    it: when no notification has touched it for `keep_ghost_tombstones_for` (the inbox keeps
    deliveries, and so deduplicates replays, that long)."""
    current, unseen = stored.directory, stored.unseen
    ghosts = unseen - wanted_users.keys() - newer_by_webhook if unseen else set()
    expire_before = now - keep_ghost_tombstones_for
    expired_ghosts = {
        uid
        for uid in ghosts
        if not current.users[uid].active
        and (current.users[uid].event_applied_at or now) < expire_before
    }
    active_ids = {uid for uid, user in current.users.items() if user.active}
    to_remove = sorted(active_ids - wanted_users.keys() - newer_by_webhook - ghosts)
    blocked = mass_removal_brake(
        [who(uid, current.users[uid].fields) for uid in to_remove],
        len(active_ids - ghosts),
        len(wanted_users),
        max_removal_fraction,
    )
    to_remove += sorted(active_ids & ghosts)
    return _Leaving(to_remove, expired_ghosts, blocked)


def _users(
    current: store.Directory,
    wanted_users: dict[str, dict[str, Any]],
    kept: set[str],
    leaving: _Leaving,
    *,
    now: datetime,
    version: int,
    changes: ChangeSet,
    stats: SyncStats,
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Teammates to insert, and rows to update (changed, back, or removed). New teammates are
    inserted from their `wanted` fields as they are (no second dict per row)."""
    new_users: list[tuple[str, dict[str, Any]]] = []
    changed_rows: list[dict[str, Any]] = []
    for uid, wanted in wanted_users.items():
        if uid in kept:
            continue
        existing = current.users.get(uid)
        if existing is None:
            new_users.append((uid, wanted))
        elif existing.removed_at is not None or existing.fields != wanted:
            changed_rows.append(
                {"id": uid, **wanted, "removed_at": None, "updated_version": version}
            )
            if existing.removed_at is not None:
                stats.users_added += 1
            else:
                stats.users_updated += 1
            changes.upsert(USER, uid)
    stats.users_added += len(new_users)
    changes.upsert_many(USER, [uid for uid, _ in new_users])
    for uid in leaving.to_remove:
        existing = current.users[uid]
        changed_rows.append(
            {"id": uid, **existing.fields, "removed_at": now, "updated_version": version}
        )
        changes.delete(USER, uid)
        stats.users_removed += 1
    for uid in leaving.expired_ghosts:
        changes.delete(USER, uid)  # served under `include_removed` until now
    return new_users, changed_rows


def _teams(
    current: store.Directory,
    wanted_teams: dict[str, str | None],
    changes: ChangeSet,
    stats: SyncStats,
) -> tuple[dict[str, str | None], dict[str, str | None], set[str]]:
    """Teams to add, rename and remove, recorded in `changes` and `stats`."""
    new_teams = {tid: name for tid, name in wanted_teams.items() if tid not in current.teams}
    renamed = {
        tid: name
        for tid, name in wanted_teams.items()
        if tid in current.teams and current.teams[tid] != name
    }
    gone_teams = set(current.teams) - wanted_teams.keys()
    for tid in (*new_teams, *renamed):
        changes.upsert(TEAM, tid)
    for tid in gone_teams:
        changes.delete(TEAM, tid)
    stats.teams_added, stats.teams_updated, stats.teams_removed = (
        len(new_teams),
        len(renamed),
        len(gone_teams),
    )
    return new_teams, renamed, gone_teams


def _unstorable(wanted_users: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Why each teammate Intercom listed that the store cannot hold cannot be held."""
    # The longest email first, at C speed: nearly always there is nothing to look for.
    longest = max(map(len, filter(None, map(_EMAIL, wanted_users.values()))), default=0)
    if longest <= store.MAX_EMAIL_LENGTH:
        return {}
    return {
        uid: reason
        for uid, wanted in wanted_users.items()
        if (reason := store.unstorable_reason(wanted)) is not None
    }


def _memberships(
    fetched: FetchedWorkspace,
    current: store.Directory,
    wanted_users: dict[str, dict[str, Any]],
    wanted_teams: dict[str, str | None],
    kept: set[str],
    takes_fetched: set[str],
) -> tuple[set[tuple[str, str]], int]:
    """The memberships the store holds after this run, from both sides of the relation and
    limited to what exists after it, and how many Intercom listed naming unknown teammates or
    teams. Teammates in `kept` keep the memberships they have, in teams that still exist."""
    # Comprehensions rather than loops of `set.add`: a large workspace has hundreds of
    # thousands of pairs.
    wanted_pairs = {(team.id, uid) for team in fetched.teams for uid in team.admin_ids}
    wanted_pairs.update([(tid, admin.id) for admin in fetched.admins for tid in admin.team_ids])
    usable = {pair for pair in wanted_pairs if pair[0] in wanted_teams and pair[1] in takes_fetched}
    # A pair not usable names a team or teammate Intercom did not list, or a teammate a newer
    # webhook owns; only the first kind is reported.
    unknown = (
        sum(1 for tid, uid in wanted_pairs if tid not in wanted_teams or uid not in wanted_users)
        if len(usable) != len(wanted_pairs)
        else 0
    )
    if unknown:
        logger.warning("ignored %d memberships naming unknown teammates or teams", unknown)
    if kept:
        usable.update(
            (tid, uid) for tid, uid in current.memberships if uid in kept and tid in wanted_teams
        )
    return usable, unknown
