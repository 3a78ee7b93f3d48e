"""A baseline: fetch the whole workspace, then apply it to the store as one diff.

Fetching happens first and completely; only then does one transaction compare the fetched
workspace with the store and write the difference (reliability rule R7). Unchanged rows are not
touched, so a baseline that finds nothing new leaves the version, and every ETag, as it was.
A teammate that a webhook changed after this fetch began is left alone: the webhook is newer.

Spec §9: what Intercom lists but the store cannot hold is left as it was and reported as a
run warning; teammates only webhooks announced ("ghosts") are removed without counting
toward the mass-removal brake; times an earlier release let lie in the future are repaired.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.orm import Session

from app.core.gc_pause import gc_paused, gc_paused_at_most
from app.intercom.client import IntercomClient
from app.intercom.models import (
    IntercomAdmin,
    IntercomTeam,
    IntercomWorkspace,
    user_fields_from_admin,
)
from app.store import directory as store
from app.store.bulk import bulk_write_cache
from app.store.models import StoreState, utcnow
from app.store.versioning import (
    GRANT,
    ROLE,
    TEAM,
    USER,
    ChangeSet,
    lock_store_state,
    membership_grant_id,
    record_changes,
    role_grant_id,
    set_workspace,
)

logger = logging.getLogger(__name__)

MASS_REMOVAL_MIN_USERS = 5
# How long a ghost's tombstone is kept after the last notification about it (the default of
# WEBHOOK_RETENTION_DAYS, which the service passes).
GHOST_TOMBSTONE_DAYS = timedelta(days=7)
_EMAIL = itemgetter("email")
FORCE_HINT = "POST /resync?force=true, or intercom-sync sync --force"


@dataclass
class FetchedWorkspace:
    workspace: IntercomWorkspace
    admins: list[IntercomAdmin]
    teams: list[IntercomTeam]
    fetch_started_at: datetime
    roles_supported: bool


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
class BaselineResult:
    stats: SyncStats
    version_before: int
    version_after: int
    changes: ChangeSet = field(default_factory=ChangeSet)
    unknown_references: int = 0
    # Items Intercom listed that the store cannot hold, left as they were (spec §9).
    warnings: list[dict[str, str]] = field(default_factory=list)


class MassRemovalBlocked(Exception):
    """The run would remove too many teammates at once; nothing was applied."""

    code = "mass_removal_blocked"

    def __init__(
        self,
        message: str,
        *,
        would_remove: int,
        active_users: int,
        teammates: list[dict[str, str | None]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.would_remove = would_remove
        self.active_users = active_users
        # Who it would remove (`{"id", "name", "email"}`), for the run record and the CLI.
        self.teammates = teammates or []


class WorkspaceChanged(Exception):
    """The token now reads another workspace than the one the store holds; nothing was applied.

    Applying it would serve one workspace's teammates as removed and another's as added, and
    C1 would see a mix of two workspaces: a store holds one workspace, always."""

    code = "workspace_changed"

    def __init__(self, stored: str, fetched: str) -> None:
        self.message = (
            f"the store holds Intercom workspace {stored}, but INTERCOM_ACCESS_TOKEN now reads "
            f"workspace {fetched}; nothing was applied. If {fetched} is the workspace to "
            f"serve, point DATABASE_URL at a new, empty store for it; otherwise restore the "
            f"access token of workspace {stored}."
        )
        super().__init__(self.message)
        self.stored = stored
        self.fetched = fetched


# Longest the collector stays paused for a fetch (see `fetch_workspace`).
FETCH_GC_PAUSE_SECONDS = 30.0


async def fetch_workspace(client: IntercomClient, *, roles_supported: bool) -> FetchedWorkspace:
    """`GET /me`, `/admins` and `/teams`, in that order; raises on any failure."""
    started = utcnow()
    # Parsing the lists keeps every teammate and team model alive, and the full collections
    # that this growth triggers walk all of them again and again: ~30 % of the fetch's CPU at
    # 50k teammates, which made it grow ~7x from 10k. The parsed models are acyclic.
    # Other requests keep running meanwhile (this awaits), so the pause is capped: a fetch
    # stuck in retries must not leave the whole process without a collector.
    with gc_paused_at_most(FETCH_GC_PAUSE_SECONDS):
        workspace = await client.get_workspace()
        logger.info("fetched workspace %s", workspace.id_code)
        admins = await client.list_admins()
        logger.info("fetched %d teammates", len(admins))
        teams = await client.list_teams()
        logger.info("fetched %d teams", len(teams))
    return FetchedWorkspace(workspace, admins, teams, started, roles_supported)


def apply_baseline(
    session: Session,
    fetched: FetchedWorkspace,
    *,
    force: bool = False,
    max_removal_fraction: float = 0.25,
    keep_ghost_tombstones_for: timedelta = GHOST_TOMBSTONE_DAYS,
) -> BaselineResult:
    """Make the store equal to `fetched`, in the caller's transaction. Raises
    MassRemovalBlocked when the brake applies, and WorkspaceChanged when `fetched` is another
    workspace than the store's, both before writing anything."""
    # The diff creates a few hundred thousand short-lived tuples, strings and dicts, none of
    # them cyclic. The collections they trigger walk every object alive, including the whole
    # fetched workspace and the loaded directory: at 50k teammates that cost ~20 % of a first
    # apply's CPU and ~50 % of a no-change one's (nothing measurable at 10k).
    with gc_paused(), bulk_write_cache(session):
        return _apply_baseline(
            session,
            fetched,
            force=force,
            max_removal_fraction=max_removal_fraction,
            keep_ghost_tombstones_for=keep_ghost_tombstones_for,
        )


def _apply_baseline(
    session: Session,
    fetched: FetchedWorkspace,
    *,
    force: bool,
    max_removal_fraction: float,
    keep_ghost_tombstones_for: timedelta,
) -> BaselineResult:
    state = lock_store_state(session)
    plan = plan_baseline(
        session,
        state,
        fetched,
        max_removal_fraction=max_removal_fraction,
        keep_ghost_tombstones_for=keep_ghost_tombstones_for,
    )
    if plan.blocked is not None and not force:
        raise plan.blocked
    version, current = plan.version, plan.current

    # Writes, in an order the foreign keys accept; repairs before the updates that may
    # re-activate the same rows.
    store.update_users(session, plan.repairs.served)
    store.update_users(session, plan.repairs.bookkeeping)
    store.upsert_teams(session, plan.new_teams, plan.renamed, version=version)
    store.upsert_roles(session, plan.new_roles, plan.renamed_roles, version=version)
    store.insert_users(session, plan.new_users, version=version)
    store.update_users(session, plan.changed_rows)
    store.mark_seen_by_baseline(session, plan.newly_seen)
    store.remove_memberships(session, plan.pairs_removed)
    store.delete_users(session, plan.expired_ghosts)
    store.add_memberships(
        session, plan.pairs_added, into_empty_store=not current.users and not current.memberships
    )
    store.delete_teams(session, plan.gone_teams)
    store.delete_roles(session, plan.gone_roles)

    set_workspace(
        session,
        state,
        plan.changes,
        workspace_id=fetched.workspace.id_code,
        name=fetched.workspace.name,
        region=fetched.workspace.region,
    )
    version_after = record_changes(session, state, plan.changes, at=plan.now)
    return BaselineResult(
        plan.stats,
        plan.version_before,
        version_after,
        plan.changes,
        plan.unknown_references,
        plan.warnings,
    )


@dataclass
class BaselinePlan:
    """What a baseline would write: the fetched workspace diffed against the store, before
    anything is written. `apply_baseline` writes it; `intercom-sync sync --dry-run` prints it."""

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
    repairs: _Repairs  # times an earlier release let lie in the future
    newly_seen: set[str]  # teammates a baseline lists for the first time
    expired_ghosts: set[str]  # ghost tombstones no delivery can still come for
    warnings: list[dict[str, str]]  # teammates left as they were, and why


def plan_baseline(
    session: Session,
    state: StoreState,
    fetched: FetchedWorkspace,
    *,
    max_removal_fraction: float,
    keep_ghost_tombstones_for: timedelta = GHOST_TOMBSTONE_DAYS,
) -> BaselinePlan:
    """The diff `apply_baseline` writes, reading the store only. Raises WorkspaceChanged when
    `fetched` is another workspace than the store's."""
    if state.workspace_id is not None and state.workspace_id != fetched.workspace.id_code:
        raise WorkspaceChanged(state.workspace_id, fetched.workspace.id_code)
    version_before = state.version
    version = version_before + 1  # the version these writes produce, if any
    current = store.load_directory(session)
    changes = ChangeSet()
    stats = SyncStats()
    now = utcnow()

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
    # (The longest email first, at C speed: nearly always there is nothing to look for.)
    longest = max(map(len, filter(None, map(_EMAIL, wanted_users.values()))), default=0)
    unstorable = (
        {
            uid: reason
            for uid, wanted in wanted_users.items()
            if (reason := store.unstorable_reason(wanted)) is not None
        }
        if longest > store.MAX_EMAIL_LENGTH
        else {}
    )
    # Rows this run leaves as they are (and, when they are active, keeps present).
    kept = newer_by_webhook | set(unstorable) if unstorable else newer_by_webhook
    warnings = [
        {"resource_type": USER, "id": uid, "reason": reason} for uid, reason in unstorable.items()
    ]
    for warning in warnings:
        logger.warning("teammate %s was left as it was: %s", warning["id"], warning["reason"])

    # Teammates only webhooks ever announced, that Intercom does not list: ghosts (a stale,
    # replayed or forged "added", or a removal of someone the store never knew). They do not
    # count toward the brake, on either side of its fraction. An active ghost is removed like
    # anyone else: its tombstone holds back a late or replayed "added" of the same or an
    # earlier time. A ghost's tombstone is deleted outright once no delivery can plausibly
    # still come for it: when no notification has touched it for `keep_ghost_tombstones_for`
    # (the inbox keeps deliveries, and so deduplicates replays, that long).
    unseen, in_future = store.users_to_look_at(session, now)
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
    blocked = _mass_removal_brake(
        [_who(uid, current.users[uid].fields) for uid in to_remove],
        len(active_ids - ghosts),
        len(wanted_users),
        max_removal_fraction,
    )
    to_remove += sorted(active_ids & ghosts)
    repairs = _future_repairs(current, in_future - expired_ghosts, now)
    for repair in repairs.served:
        if current.users[repair["id"]].active:
            changes.upsert(USER, repair["id"])
        else:
            changes.delete(USER, repair["id"])
        repair["updated_version"] = version

    # Teams first: memberships refer to them.
    new_teams = {tid: name for tid, name in wanted_teams.items() if tid not in current.teams}
    renamed = {
        tid: name
        for tid, name in wanted_teams.items()
        if tid in current.teams and current.teams[tid] != name
    }
    gone_teams = set(current.teams) - wanted_teams.keys()

    # Users. New teammates are inserted from their `wanted` fields as they are (no second dict
    # per row); changed and removed ones are updated row by row.
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
    for uid in to_remove:
        existing = current.users[uid]
        changed_rows.append(
            {"id": uid, **existing.fields, "removed_at": now, "updated_version": version}
        )
        changes.delete(USER, uid)
        stats.users_removed += 1
    for uid in expired_ghosts:
        changes.delete(USER, uid)  # served under `include_removed` until now

    # Memberships: both sides of the relation, limited to what exists after this run.
    present_users = (set(wanted_users) - kept) | {
        uid for uid in kept if uid in current.users and current.users[uid].active
    }
    # Comprehensions rather than loops of `set.add`: ~100,000 pairs at 10k teammates.
    wanted_pairs = {(team.id, uid) for team in fetched.teams for uid in team.admin_ids}
    wanted_pairs.update([(tid, admin.id) for admin in fetched.admins for tid in admin.team_ids])
    takes_fetched = present_users - kept
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
    pairs_added = usable - current.memberships
    pairs_removed = current.memberships - usable
    changes.upsert_many(GRANT, [membership_grant_id(tid, uid) for tid, uid in pairs_added])
    for tid, uid in pairs_removed:
        changes.delete(GRANT, membership_grant_id(tid, uid))
    stats.memberships_added = len(pairs_added)
    stats.memberships_removed = len(pairs_removed)

    for tid in new_teams:
        changes.upsert(TEAM, tid)
    for tid in renamed:
        changes.upsert(TEAM, tid)
    for tid in gone_teams:
        changes.delete(TEAM, tid)
    stats.teams_added, stats.teams_updated, stats.teams_removed = (
        len(new_teams),
        len(renamed),
        len(gone_teams),
    )

    # Roles and their grants.
    role_names: dict[str, str | None] = {}
    for admin in fetched.admins:
        if (
            fetched.roles_supported
            and admin.role
            and admin.id in present_users
            and admin.id not in kept
        ):
            role_names[admin.role.id] = admin.role.name
    for uid in kept:
        if uid not in current.users:
            continue
        kept_role = current.users[uid].fields.get("role_id")
        if kept_role and current.users[uid].active and kept_role not in role_names:
            role_names[kept_role] = current.roles.get(kept_role)
    new_roles = {rid: n for rid, n in role_names.items() if rid not in current.roles}
    renamed_roles = {
        rid: n for rid, n in role_names.items() if rid in current.roles and current.roles[rid] != n
    }
    gone_roles = set(current.roles) - role_names.keys()
    for rid in (*new_roles, *renamed_roles):
        changes.upsert(ROLE, rid)
    for rid in gone_roles:
        changes.delete(ROLE, rid)
    role_changes = [(None, wanted["role_id"], uid) for uid, wanted in new_users]
    for row in changed_rows:
        before = current.users[row["id"]]
        role_changes.append(
            (
                before.fields.get("role_id") if before.active else None,
                row["role_id"] if row["removed_at"] is None else None,
                row["id"],
            )
        )
    for old_role, new_role, uid in role_changes:
        if old_role != new_role:
            if old_role:
                changes.delete(GRANT, role_grant_id(old_role, uid))
            if new_role:
                changes.upsert(GRANT, role_grant_id(new_role, uid))

    return BaselinePlan(
        current=current,
        version_before=version_before,
        version=version,
        now=now,
        stats=stats,
        changes=changes,
        unknown_references=unknown,
        blocked=blocked,
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
        newly_seen=unseen & wanted_users.keys(),
        expired_ghosts=expired_ghosts,
        warnings=warnings,
    )


@dataclass
class _Repairs:
    """Rows an earlier release let a notification from the far future poison."""

    served: list[dict[str, Any]] = field(default_factory=list)  # a served value changes
    bookkeeping: list[dict[str, Any]] = field(default_factory=list)  # only watermarks change


def _future_repairs(current: store.Directory, user_ids: set[str], now: datetime) -> _Repairs:
    """Watermarks and sign-in or removal times later than `now` plus the allowed clock skew:
    a watermark that lies in the future makes every genuine notification look older than it,
    and a sign-in time there hides every real one. Watermarks are cleared (the next
    notification sets them again), sign-in times cleared, removal times set to now."""
    limit = now + store.MAX_FUTURE_SKEW
    limit_ts = int(limit.timestamp())
    repairs = _Repairs()
    for uid in sorted(user_ids):
        user = current.users[uid]
        row: dict[str, Any] = {
            "id": uid,
            "event_watermark": _unless_future(user.event_watermark, limit_ts),
            "away_watermark": _unless_future(user.away_watermark, limit_ts),
            "last_logout_at": _unless_future(user.last_logout_at, limit),
        }
        login = _unless_future(user.last_login_at, limit)
        removed_at = now if user.removed_at is not None and user.removed_at > limit else None
        if login != user.last_login_at or removed_at is not None:
            row.update(last_login_at=login, removed_at=removed_at or user.removed_at)
            repairs.served.append(row)
        else:
            repairs.bookkeeping.append(row)
        logger.warning("teammate %s had times in the future; cleared them", uid)
    return repairs


def _unless_future(value: Any, limit: Any) -> Any:
    return None if value is not None and value > limit else value


def _who(user_id: str, fields: dict[str, Any]) -> dict[str, str | None]:
    return {"id": user_id, "name": fields.get("name"), "email": fields.get("email")}


def _mass_removal_brake(
    teammates: list[dict[str, str | None]],
    active_users: int,
    fetched_users: int,
    max_fraction: float,
) -> MassRemovalBlocked | None:
    would_remove = len(teammates)
    if fetched_users == 0 and active_users > 0:
        return MassRemovalBlocked(
            f"Intercom returned no teammates while {active_users} are stored; nothing was "
            "applied. Check the token's workspace, then resync with force if this is real "
            f"({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
            teammates=teammates,
        )
    if would_remove > MASS_REMOVAL_MIN_USERS and would_remove > max_fraction * active_users:
        return MassRemovalBlocked(
            f"this run would remove {would_remove} of {active_users} teammates, more than "
            f"MAX_REMOVAL_FRACTION={max_fraction:g} allows; nothing was applied. If it is real, "
            f"resync with force to apply it ({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
            teammates=teammates,
        )
    return None
