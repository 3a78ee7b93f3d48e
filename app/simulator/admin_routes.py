"""Intercom's read endpoints for teammates and teams (``GET /me``, ``/admins``, ``/admins/{id}``,
``/teams``, ``/teams/{id}``), and the JSON shapes they answer with.

The shapes are Intercom's own (``tests/simulator/test_sdk_honesty.py`` parses them with the
official SDK); the gateway (``gateway``) wraps each handler with auth, faults and the log.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from app.core.gc_pause import gc_paused
from app.simulator.records import SimAdmin, SimTeam
from app.simulator.responses import Answer, error_list, requested_version, version_at_least
from app.simulator.state import SimWorkspace
from app.simulator.webhooks import DEFAULT_AVATAR_URL, intercom_id

APP_CREATED_AT = 1734537243

# Shared, never mutated: orjson serialises it the same for every admin.
_EMPTY: dict[str, Any] = {}


def role_visible(intercom_version: str | None) -> bool:
    """Whether ``admin.role`` exists in this API version (2.16+, Preview/Unstable)."""
    return version_at_least(intercom_version, (2, 16))


def admin_rest_item(
    admin: SimAdmin, *, with_role: bool, with_avatar: bool, detail: bool = False
) -> dict[str, Any]:
    """The admin as ``GET /admins`` (or with ``detail``, ``GET /admins/{id}``) returns it."""
    # This runs once per admin per list request (10,000+ of them), so it stays a flat literal.
    item: dict[str, Any] = {
        "type": "admin",
        "id": admin.id,
        "name": admin.name,
        "email": admin.email,
        "away_mode_enabled": admin.away_mode_enabled,
        "away_mode_reassign": admin.away_mode_reassign,
        "has_inbox_seat": admin.has_inbox_seat,
        "team_ids": [int(t) if t.isdigit() and t.isascii() else t for t in admin.team_ids],
        "team_priority_level": _EMPTY,
    }
    # Intercom omits job_title rather than sending null for most teammates.
    if admin.job_title is not None:
        item["job_title"] = admin.job_title
    if detail:
        item["away_status_reason_id"] = None
    if with_avatar:
        # An object, as in Intercom's `admin` schema (the official SDK's `AdminAvatar`).
        item["avatar"] = {"type": "avatar", "image_url": admin.avatar_url or DEFAULT_AVATAR_URL}
    if with_role and admin.role is not None:
        item["role"] = {"type": "role", "id": admin.role[0], "name": admin.role[1]}
    return item


def team_rest_item(team: SimTeam) -> dict[str, Any]:
    """The team as ``GET /teams`` returns it."""
    return {
        "type": "team",
        "id": team.id,
        "name": team.name,
        "admin_ids": [intercom_id(a) for a in team.admin_ids],
        "admin_priority_level": {"primary_admin_ids": [], "secondary_admin_ids": []},
        "assignment_limit": None,
        "distribution_method": "round_robin",
    }


def render_admin_list(
    workspace: SimWorkspace, *, with_role: bool = False, with_avatar: bool = False
) -> dict[str, Any]:
    """The ``admin.list`` body for the workspace's current admins."""
    with workspace.lock, gc_paused():
        admins = [
            admin_rest_item(a, with_role=with_role, with_avatar=with_avatar)
            for a in workspace.admins.values()
        ]
    return {"type": "admin.list", "admins": admins}


def render_team_list(workspace: SimWorkspace) -> dict[str, Any]:
    """The ``team.list`` body for the workspace's current teams."""
    with workspace.lock, gc_paused():
        teams = [team_rest_item(t) for t in workspace.teams.values()]
    return {"type": "team.list", "teams": teams}


def _query_flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() == "true"


class AdminAndTeamReads:
    """The read handlers, bound to one workspace."""

    def __init__(self, workspace: SimWorkspace) -> None:
        self.ws = workspace

    def me(self, request: Request, request_id: str) -> Answer:
        with self.ws.lock:
            first = next(iter(self.ws.admins.values()), None)
            admin = first.copy() if first is not None else None
            app = {
                "type": "app",
                "id_code": self.ws.id_code,
                "name": self.ws.name,
                "created_at": APP_CREATED_AT,
                "secure": False,
                "identity_verification": False,
                "timezone": "America/Los_Angeles",
                "region": self.ws.region,
            }
        return 200, {
            "type": "admin",
            "id": admin.id if admin else "1",
            "email": admin.email if admin else "admin@acme.example",
            "name": admin.name if admin else "Workspace Owner",
            "email_verified": True,
            "app": app,
            "avatar": {
                "type": "avatar",
                "image_url": (admin.avatar_url if admin else None) or DEFAULT_AVATAR_URL,
            },
            "has_inbox_seat": True,
        }

    def _with_role(self, request: Request) -> bool:
        return role_visible(requested_version(request, self.ws))

    def list_admins(self, request: Request, request_id: str) -> Answer:
        body = render_admin_list(
            self.ws,
            with_role=self._with_role(request),
            with_avatar=_query_flag(request, "display_avatar"),
        )
        return 200, body

    def get_admin(self, request: Request, request_id: str) -> Answer:
        admin = self.ws.get_admin(request.path_params["admin_id"])
        if admin is None:
            return 404, error_list("admin_not_found", "Admin not found", request_id)
        item = admin_rest_item(
            admin,
            with_role=self._with_role(request),
            with_avatar=_query_flag(request, "display_avatar"),
            detail=True,
        )
        return 200, item

    def list_teams(self, request: Request, request_id: str) -> Answer:
        return 200, render_team_list(self.ws)

    def get_team(self, request: Request, request_id: str) -> Answer:
        team = self.ws.get_team(request.path_params["team_id"])
        if team is None:
            return 404, error_list("team_not_found", "Team not found", request_id)
        return 200, team_rest_item(team)
