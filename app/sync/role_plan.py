"""The roles part of a baseline's diff. Intercom lists no roles of its own: a role is known
only through the teammates who hold it, so the roles a baseline keeps are those its present
teammates hold (and those kept teammates hold), and every change of a teammate's role moves a
role grant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.intercom.models import IntercomAdmin
from app.store import directory as store
from app.store.versioning import GRANT, ROLE, ChangeSet, role_grant_id


def plan_roles(
    admins: Sequence[IntercomAdmin],
    roles_supported: bool,
    current: store.Directory,
    kept: set[str],
    present_users: set[str],
    new_users: list[tuple[str, dict[str, Any]]],
    changed_rows: list[dict[str, Any]],
    changes: ChangeSet,
) -> tuple[dict[str, str | None], dict[str, str | None], set[str]]:
    """Roles to add, rename and remove (the roles present teammates hold), recorded in
    `changes` with the role grants that `new_users` and `changed_rows` add or take away."""
    role_names: dict[str, str | None] = {}
    for admin in admins:
        if roles_supported and admin.role and admin.id in present_users and admin.id not in kept:
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
    return new_roles, renamed_roles, gone_roles
