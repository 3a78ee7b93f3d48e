"""A baseline: fetch the whole workspace, then apply it to the store as one diff.

Fetching happens first and completely; only then does one transaction compare the fetched
workspace with the store and write the difference (reliability rule R7). Unchanged rows are not
touched, so a baseline that finds nothing new leaves the version, and every ETag, as it was.
A teammate that a webhook changed after this fetch began is left alone: the webhook is newer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.intercom.client import IntercomClient
from app.intercom.models import IntercomAdmin, IntercomTeam, IntercomWorkspace
from app.store import directory as store
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
)

logger = logging.getLogger(__name__)

MASS_REMOVAL_MIN_USERS = 5


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


async def fetch_workspace(client: IntercomClient, *, roles_supported: bool) -> FetchedWorkspace:
    """`GET /me`, `/admins` and `/teams`, in that order; raises on any failure."""
    started = utcnow()
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
) -> BaselineResult:
    """Make the store equal to `fetched`, in the caller's transaction. Raises
    MassRemovalBlocked (before writing anything) when the brake applies."""
    state = lock_store_state(session)
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

    # Users.
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    for uid, wanted in wanted_users.items():
        if uid in newer_by_webhook:
            continue
        existing = current.users.get(uid)
        if existing is None:
            new_rows.append({"id": uid, **wanted, "updated_version": version})
            stats.users_added += 1
        elif existing.removed_at is not None or existing.fields != wanted:
            changed_rows.append(
                {"id": uid, **wanted, "removed_at": None, "updated_version": version}
            )
            if existing.removed_at is not None:
                stats.users_added += 1
            else:
                stats.users_updated += 1
        else:
            continue
        changes.upsert(USER, uid)
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
    wanted_pairs: set[tuple[str, str]] = set()
    unknown = 0
    for team in fetched.teams:
        for uid in team.admin_ids:
            wanted_pairs.add((team.id, uid))
    for admin in fetched.admins:
        for tid in admin.team_ids:
            wanted_pairs.add((tid, admin.id))
    usable: set[tuple[str, str]] = set()
    for tid, uid in wanted_pairs:
        if tid in wanted_teams and uid in present_users and uid not in newer_by_webhook:
            usable.add((tid, uid))
        elif tid not in wanted_teams or uid not in wanted_users:
            unknown += 1
    if unknown:
        logger.warning("ignored %d memberships naming unknown teammates or teams", unknown)
    for tid, uid in current.memberships:
        if uid in newer_by_webhook and tid in wanted_teams:
            usable.add((tid, uid))
    pairs_added = usable - current.memberships
    pairs_removed = current.memberships - usable
    for tid, uid in pairs_added:
        changes.upsert(GRANT, membership_grant_id(tid, uid))
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
    for row in (*new_rows, *changed_rows):
        uid = row["id"]
        before = current.users.get(uid)
        old_role = before.fields.get("role_id") if before and before.active else None
        new_role = row["role_id"] if row.get("removed_at") is None else None
        if old_role != new_role:
            if old_role:
                changes.delete(GRANT, role_grant_id(old_role, uid))
            if new_role:
                changes.upsert(GRANT, role_grant_id(new_role, uid))

    # Writes, in an order the foreign keys accept.
    store.upsert_teams(session, new_teams, renamed, version=version)
    store.upsert_roles(session, new_roles, renamed_roles, version=version)
    store.insert_users(session, new_rows)
    store.update_users(session, changed_rows)
    store.remove_memberships(session, pairs_removed)
    store.add_memberships(session, pairs_added)
    store.delete_teams(session, gone_teams)
    store.delete_roles(session, gone_roles)

    state.workspace_id = fetched.workspace.id_code
    state.workspace_name = fetched.workspace.name
    state.workspace_region = fetched.workspace.region
    version_after = record_changes(session, state, changes, at=now)
    return BaselineResult(stats, version_before, version_after, changes, unknown)


def _check_mass_removal(
    would_remove: int, active_users: int, fetched_users: int, max_fraction: float
) -> None:
    if fetched_users == 0 and active_users > 0:
        raise MassRemovalBlocked(
            f"Intercom returned no teammates while {active_users} are stored; nothing was "
            "applied. Check the token's workspace, then resync with force=true if this is real.",
            would_remove=would_remove,
            active_users=active_users,
        )
    if would_remove > MASS_REMOVAL_MIN_USERS and would_remove > max_fraction * active_users:
        raise MassRemovalBlocked(
            f"this run would remove {would_remove} of {active_users} teammates, more than "
            f"MAX_REMOVAL_FRACTION={max_fraction:g} allows; nothing was applied. Resync with "
            "force=true to apply it.",
            would_remove=would_remove,
            active_users=active_users,
        )
