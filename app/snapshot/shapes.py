"""Baton-shaped JSON objects. Ids are Intercom's ids as strings; entitlement and
grant ids follow baton-sdk's `{type}:{id}:{slug}` and `{entitlement}:{type}:{id}` byte for byte,
because C1 keys configuration on them."""

from __future__ import annotations

from typing import Any

from app.core.timefmt import iso
from app.store.versioning import membership_grant_id, role_grant_id, workspace_grant_id

USER_RESOURCE_TYPE = {"id": "user", "display_name": "User", "traits": ["user"]}
TEAM_RESOURCE_TYPE = {"id": "team", "display_name": "Team", "traits": ["group"]}
ROLE_RESOURCE_TYPE = {"id": "role", "display_name": "Role", "traits": ["role"]}
# The workspace itself, so that C1 can revoke a teammate's access to it.
WORKSPACE_RESOURCE_TYPE = {"id": "workspace", "display_name": "Workspace", "traits": []}


def resource_types(*, roles_enabled: bool) -> list[dict[str, Any]]:
    types = [USER_RESOURCE_TYPE, TEAM_RESOURCE_TYPE]
    if roles_enabled:
        types.append(ROLE_RESOURCE_TYPE)
    types.append(WORKSPACE_RESOURCE_TYPE)
    return types


def user_object(row: Any, team_ids: list[str], *, roles_enabled: bool) -> dict[str, Any]:
    """A teammate as C1 reads it; `row` has the columns of `reads.USER_COLUMNS`."""
    email = row.email
    user: dict[str, Any] = {
        "id": row.id,
        "display_name": row.name or email or row.id,
        "email": email,
        "login": email,
        "status": "deleted" if row.removed_at is not None else "enabled",
        "account_type": row.account_type,
        "team_ids": team_ids,
        "last_login_at": iso(row.last_login_at),
        "profile": {
            "job_title": row.job_title,
            "has_inbox_seat": row.has_inbox_seat,
            "away_mode_enabled": row.away_mode_enabled,
            "away_mode_reassign": row.away_mode_reassign,
            "last_login_method": row.last_login_method,
        },
    }
    if roles_enabled:
        user["role_ids"] = [row.role_id] if row.role_id and row.removed_at is None else []
    if row.removed_at is not None:
        user["removed_at"] = iso(row.removed_at)
    return user


def team_object(team_id: str, name: str | None, member_ids: list[str]) -> dict[str, Any]:
    return {"id": team_id, "display_name": name or team_id, "member_ids": member_ids, "profile": {}}


def role_object(role_id: str, name: str | None, member_ids: list[str]) -> dict[str, Any]:
    return {"id": role_id, "display_name": name or role_id, "member_ids": member_ids, "profile": {}}


def team_entitlement(team_id: str, name: str | None) -> dict[str, Any]:
    return {
        "id": f"team:{team_id}:member",
        "resource_type": "team",
        "resource_id": team_id,
        "slug": "member",
        "display_name": f"{name or team_id} Team Member",
        "purpose": "assignment",
        "grantable_to": ["user"],
    }


def workspace_resource(workspace_id: str, name: str | None, region: str | None) -> dict[str, Any]:
    return {"id": workspace_id, "display_name": name or workspace_id, "profile": {"region": region}}


def workspace_entitlement(workspace_id: str, name: str | None) -> dict[str, Any]:
    return {
        "id": f"workspace:{workspace_id}:member",
        "resource_type": "workspace",
        "resource_id": workspace_id,
        "slug": "member",
        "display_name": f"{name or workspace_id} Workspace Member",
        "purpose": "assignment",
        "grantable_to": ["user"],
    }


def role_entitlement(role_id: str, name: str | None) -> dict[str, Any]:
    return {
        "id": f"role:{role_id}:assigned",
        "resource_type": "role",
        "resource_id": role_id,
        "slug": "assigned",
        "display_name": f"{name or role_id} Role",
        "purpose": "assignment",
        "grantable_to": ["user"],
    }


def team_grant(team_id: str, user_id: str) -> dict[str, Any]:
    return {
        "id": membership_grant_id(team_id, user_id),
        "entitlement_id": f"team:{team_id}:member",
        "principal": {"resource_type": "user", "resource_id": user_id},
    }


def role_grant(role_id: str, user_id: str) -> dict[str, Any]:
    return {
        "id": role_grant_id(role_id, user_id),
        "entitlement_id": f"role:{role_id}:assigned",
        "principal": {"resource_type": "user", "resource_id": user_id},
    }


def workspace_grant(workspace_id: str, user_id: str) -> dict[str, Any]:
    return {
        "id": workspace_grant_id(workspace_id, user_id),
        "entitlement_id": f"workspace:{workspace_id}:member",
        "principal": {"resource_type": "user", "resource_id": user_id},
    }


def workspace_object(
    workspace_id: str | None, name: str | None, region: str | None
) -> dict[str, Any]:
    return {"id": workspace_id, "name": name, "region": region}
