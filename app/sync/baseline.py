"""A baseline: fetch the whole workspace, then apply it to the store as one diff.

Fetching happens first and completely; only then does one transaction compare the fetched
workspace with the store and write the difference (reliability rule R7). Unchanged rows are not
touched, so a baseline that finds nothing new leaves the version, and every ETag, as it was.
A teammate that a webhook changed after this fetch began is left alone: the webhook is newer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.gc_pause import gc_paused
from app.intercom.client import IntercomClient
from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.store import directory as store
from app.store.bulk import bulk_write_cache
from app.store.models import utcnow
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
FORCE_HINT = "POST /resync?force=true, or intercom-sync sync --force"


def account_type_of(email: str | None) -> str:
    """Intercom's own bot teammates (Fin: `operator+…@intercom.io`) are service accounts."""
    if email:
        local, _, domain = email.strip().lower().partition("@")
        if domain == "intercom.io" and local.startswith("operator+"):
            return "service"
    return "human"


def user_fields_from_admin(admin: IntercomAdmin, *, roles_supported: bool) -> dict[str, Any]:
    return {
        "name": admin.name,
        "email": admin.email,
        "job_title": admin.job_title,
        "has_inbox_seat": admin.has_inbox_seat,
        "away_mode_enabled": admin.away_mode_enabled,
        "away_mode_reassign": admin.away_mode_reassign,
        "role_id": admin.role.id if roles_supported and admin.role else None,
        "account_type": account_type_of(admin.email),
    }


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


class MassRemovalBlocked(Exception):
    """The run would remove too many teammates at once; nothing was applied."""

    code = "mass_removal_blocked"

    def __init__(self, message: str, *, would_remove: int, active_users: int) -> None:
        super().__init__(message)
        self.message = message
        self.would_remove = would_remove
        self.active_users = active_users


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
    with _collector_paused(FETCH_GC_PAUSE_SECONDS):
        workspace = await client.get_workspace()
        logger.info("fetched workspace %s", workspace.id_code)
        admins = await client.list_admins()
        logger.info("fetched %d teammates", len(admins))
        teams = await client.list_teams()
        logger.info("fetched %d teams", len(teams))
    return FetchedWorkspace(workspace, admins, teams, started, roles_supported)


@contextmanager
def _collector_paused(limit_seconds: float) -> Iterator[None]:
    """Pause the garbage collector for the block, but for no longer than `limit_seconds`."""
    if not gc.isenabled():  # someone else's pause: leave it to them
        yield
        return
    gc.disable()
    resume = asyncio.get_running_loop().call_later(limit_seconds, gc.enable)
    try:
        yield
    finally:
        resume.cancel()
        gc.enable()


def apply_baseline(
    session: Session,
    fetched: FetchedWorkspace,
    *,
    force: bool = False,
    max_removal_fraction: float = 0.25,
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
            session, fetched, force=force, max_removal_fraction=max_removal_fraction
        )


def _apply_baseline(
    session: Session, fetched: FetchedWorkspace, *, force: bool, max_removal_fraction: float
) -> BaselineResult:
    state = lock_store_state(session)
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

    active_ids = {uid for uid, user in current.users.items() if user.active}
    to_remove = sorted(active_ids - wanted_users.keys() - newer_by_webhook)
    if not force:
        _check_mass_removal(
            len(to_remove), len(active_ids), len(wanted_users), max_removal_fraction
        )

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
        if uid in newer_by_webhook:
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

    # Memberships: both sides of the relation, limited to what exists after this run.
    present_users = (set(wanted_users) - newer_by_webhook) | {
        uid for uid in newer_by_webhook if current.users[uid].active
    }
    # Comprehensions rather than loops of `set.add`: ~100,000 pairs at 10k teammates.
    wanted_pairs = {(team.id, uid) for team in fetched.teams for uid in team.admin_ids}
    wanted_pairs.update([(tid, admin.id) for admin in fetched.admins for tid in admin.team_ids])
    takes_fetched = present_users - newer_by_webhook
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
    if newer_by_webhook:
        usable.update(
            (tid, uid)
            for tid, uid in current.memberships
            if uid in newer_by_webhook and tid in wanted_teams
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
            and admin.id not in newer_by_webhook
        ):
            role_names[admin.role.id] = admin.role.name
    for uid in newer_by_webhook:
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

    # Writes, in an order the foreign keys accept.
    store.upsert_teams(session, new_teams, renamed, version=version)
    store.upsert_roles(session, new_roles, renamed_roles, version=version)
    store.insert_users(session, new_users, version=version)
    store.update_users(session, changed_rows)
    store.remove_memberships(session, pairs_removed)
    store.add_memberships(
        session, pairs_added, into_empty_store=not current.users and not current.memberships
    )
    store.delete_teams(session, gone_teams)
    store.delete_roles(session, gone_roles)

    set_workspace(
        session,
        state,
        changes,
        workspace_id=fetched.workspace.id_code,
        name=fetched.workspace.name,
        region=fetched.workspace.region,
    )
    version_after = record_changes(session, state, changes, at=now)
    return BaselineResult(stats, version_before, version_after, changes, unknown)


def _check_mass_removal(
    would_remove: int, active_users: int, fetched_users: int, max_fraction: float
) -> None:
    if fetched_users == 0 and active_users > 0:
        raise MassRemovalBlocked(
            f"Intercom returned no teammates while {active_users} are stored; nothing was "
            "applied. Check the token's workspace, then resync with force if this is real "
            f"({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
        )
    if would_remove > MASS_REMOVAL_MIN_USERS and would_remove > max_fraction * active_users:
        raise MassRemovalBlocked(
            f"this run would remove {would_remove} of {active_users} teammates, more than "
            f"MAX_REMOVAL_FRACTION={max_fraction:g} allows; nothing was applied. If it is real, "
            f"resync with force to apply it ({FORCE_HINT}).",
            would_remove=would_remove,
            active_users=active_users,
        )
