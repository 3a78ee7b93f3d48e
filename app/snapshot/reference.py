"""The snapshot body built the plain way, as one dict: the definition of what
`GET /api/v1/snapshot` serves. It exists apart from the fast serializer (`splice.py`) so that
there is one obvious statement of the body's shape, which the serializer must match byte for
byte (the tests and the bench compare the two), and it holds the two steps both share: who is
in what (`link`) and the body up to its grants (`body_before_grants`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.timefmt import iso
from app.snapshot import shapes
from app.store.reads import SnapshotRows


def build_snapshot(rows: SnapshotRows, *, roles_enabled: bool) -> dict[str, Any]:
    """The whole state of the world at `rows.header.version`."""
    links = link(rows, roles_enabled=roles_enabled)
    users = [
        shapes.user_object(row, links.team_ids_by_user[row.id], roles_enabled=roles_enabled)
        for row in rows.users
    ]
    body = body_before_grants(rows, links, users, roles_enabled=roles_enabled)
    body["grants"] = (
        [shapes.team_grant(t, u) for t, u in links.team_grants]
        + [shapes.role_grant(r, u) for r, u in links.role_grants]
        + [shapes.workspace_grant(w, u) for w, u in links.workspace_grants]
    )
    return body


@dataclass
class Links:
    """Who is in what, limited to what is served."""

    team_ids_by_user: dict[str, list[str]]
    members_by_team: dict[str, list[str]]
    team_grants: list[tuple[str, str]]  # (team id, user id), in grant order
    holders: dict[str, list[str]]  # role id -> user ids
    role_grants: list[tuple[str, str]]  # (role id, user id), in grant order
    workspace_grants: list[tuple[str, str]]  # (workspace id, user id), in user id order


def link(rows: SnapshotRows, *, roles_enabled: bool) -> Links:
    active = [row.id for row in rows.users if row.removed_at is None]
    active_ids = set(active)
    team_ids_by_user: dict[str, list[str]] = {row.id: [] for row in rows.users}
    members_by_team: dict[str, list[str]] = {row.id: [] for row in rows.teams}
    # Consistency guard: a membership is only served with both of its ends.
    team_grants = [
        pair for pair in rows.memberships if pair[1] in active_ids and pair[0] in members_by_team
    ]
    for team_id, user_id in team_grants:
        team_ids_by_user[user_id].append(team_id)
        members_by_team[team_id].append(user_id)
    holders: dict[str, list[str]] = {}
    role_grants: list[tuple[str, str]] = []
    if roles_enabled:
        holders = {row.id: [] for row in rows.roles}
        for row in rows.users:
            if row.role_id and row.removed_at is None and row.role_id in holders:
                holders[row.role_id].append(row.id)
        role_grants = [
            (role_id, user_id) for role_id, user_ids in holders.items() for user_id in user_ids
        ]
    # Every active teammate is a member of the workspace (a removed one has no grant).
    workspace_id = rows.header.workspace_id
    workspace_grants = [(workspace_id, uid) for uid in active] if workspace_id is not None else []
    return Links(
        team_ids_by_user, members_by_team, team_grants, holders, role_grants, workspace_grants
    )


def link_inputs(rows: SnapshotRows, *, roles_enabled: bool) -> tuple[Any, ...]:
    """Everything `link` reads; equal inputs give equal links."""
    users = tuple(
        (row.id, row.removed_at is None, row.role_id if roles_enabled else None)
        for row in rows.users
    )
    teams = tuple(row.id for row in rows.teams)
    roles = tuple(row.id for row in rows.roles) if roles_enabled else ()
    return (list(rows.memberships), users, teams, roles, rows.header.workspace_id)


def body_before_grants(
    rows: SnapshotRows, links: Links, users: Any, *, roles_enabled: bool
) -> dict[str, Any]:
    """The body up to its entitlements; the caller adds the grants, which come last."""
    teams = [
        shapes.team_object(row.id, row.name, links.members_by_team[row.id]) for row in rows.teams
    ]
    entitlements = [shapes.team_entitlement(row.id, row.name) for row in rows.teams]
    header = rows.header
    body: dict[str, Any] = {
        "workspace": shapes.workspace_object(
            header.workspace_id, header.workspace_name, header.workspace_region
        ),
        "version": header.version,
        "synced_at": iso(header.version_at or header.last_sync_at),
        "resource_types": shapes.resource_types(roles_enabled=roles_enabled),
        "users": users,
        "teams": teams,
    }
    if roles_enabled:
        body["roles"] = [shapes.role_object(r.id, r.name, links.holders[r.id]) for r in rows.roles]
        entitlements += [shapes.role_entitlement(r.id, r.name) for r in rows.roles]
    body["workspaces"] = []
    if header.workspace_id is not None:
        body["workspaces"].append(
            shapes.workspace_resource(
                header.workspace_id, header.workspace_name, header.workspace_region
            )
        )
        entitlements.append(
            shapes.workspace_entitlement(header.workspace_id, header.workspace_name)
        )
    body["entitlements"] = entitlements
    return body
