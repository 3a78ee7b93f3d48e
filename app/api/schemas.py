"""Response shapes, for the OpenAPI document. The cold routes (health, sync runs, webhook
events) build their answers from these very models (`app/api/rendering.py`); the hot routes
serialize with orjson themselves, and these models describe exactly what they send (a test
compares the two)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Doc):
    code: str
    message: str


class ErrorBody(_Doc):
    error: ErrorDetail


class WebhookAck(_Doc):
    status: Literal["accepted", "duplicate", "ignored"]


class Health(_Doc):
    status: Literal["ok"]


class Readiness(_Doc):
    status: Literal["ok", "degraded", "unavailable"]
    version: int | None
    last_sync_at: str | None
    last_webhook_at: str | None
    inbox_backlog: int | None
    problems: list[str]
    activity_log_read_to: str | None = Field(
        description="Every activity-log entry created up to this time has been read (spec §11)."
    )


class SyncStats(_Doc):
    users_added: int
    users_updated: int
    users_removed: int
    teams_added: int
    teams_updated: int
    teams_removed: int
    memberships_added: int
    memberships_removed: int


class Teammate(_Doc):
    id: str
    name: str | None
    email: str | None


class RunErrorDetails(_Doc):
    would_remove: list[Teammate]


class RunError(_Doc):
    code: str
    message: str
    # Present when there is more to say, e.g. who a blocked run would remove.
    details: RunErrorDetails | None = None


class RunWarning(_Doc):
    """An item the run could not store; it was left as it was (never removed because of it)."""

    resource_type: Literal["user", "team", "role"]
    id: str
    reason: str


class SyncRun(_Doc):
    id: int
    trigger: Literal["startup", "schedule", "operator", "webhook", "cli"]
    status: Literal["queued", "running", "succeeded", "failed", "blocked"]
    started_at: str | None
    finished_at: str | None
    stats: SyncStats
    error: RunError | None
    warnings: list[RunWarning]


class SyncRunList(_Doc):
    items: list[SyncRun]


class WebhookEventView(_Doc):
    id: str | None
    inbox_id: int
    topic: str | None
    app_id: str | None
    teammate_id: str | None
    created_at: str | None
    received_at: str
    applied_at: str | None
    outcome: Literal["pending", "applied", "ignored", "rejected", "failed"]
    deliveries: int
    attempts: int
    error: str | None


class WebhookEventList(_Doc):
    items: list[WebhookEventView]


class Workspace(_Doc):
    id: str | None
    name: str | None
    region: str | None


class ResourceType(_Doc):
    id: str
    display_name: str
    traits: list[str]


class UserProfile(_Doc):
    job_title: str | None
    has_inbox_seat: bool
    away_mode_enabled: bool
    away_mode_reassign: bool
    last_login_method: str | None = Field(
        description="`metadata.sign_in_method` of the last sign-in the activity log reported, "
        "e.g. `email_password`."
    )


class User(_Doc):
    id: str
    display_name: str
    email: str | None
    login: str | None
    status: Literal["enabled", "deleted"]
    account_type: Literal["human", "service"]
    team_ids: list[str]
    last_login_at: str | None
    profile: UserProfile
    role_ids: list[str] | None = None
    removed_at: str | None = None


class Team(_Doc):
    id: str
    display_name: str
    member_ids: list[str]
    profile: dict[str, object]


class Role(Team):
    pass


class WorkspaceProfile(_Doc):
    region: str | None


class WorkspaceResource(_Doc):
    """The workspace as a resource (type `workspace`): its `member` entitlement is held by
    every active teammate."""

    id: str
    display_name: str
    profile: WorkspaceProfile


class Entitlement(_Doc):
    id: str
    resource_type: Literal["team", "role", "workspace"]
    resource_id: str
    slug: str
    display_name: str
    purpose: Literal["assignment"]
    grantable_to: list[str]


class Principal(_Doc):
    resource_type: Literal["user"]
    resource_id: str


class Grant(_Doc):
    id: str
    entitlement_id: str
    principal: Principal


class Snapshot(_Doc):
    workspace: Workspace
    version: int
    synced_at: str | None
    resource_types: list[ResourceType]
    users: list[User]
    teams: list[Team]
    roles: list[Role] | None = None
    workspaces: list[WorkspaceResource]
    entitlements: list[Entitlement]
    grants: list[Grant]


class UserPage(_Doc):
    items: list[User]
    next_cursor: str | None
    version: int


class TeamPage(_Doc):
    items: list[Team]
    next_cursor: str | None
    version: int


class RolePage(_Doc):
    items: list[Role]
    next_cursor: str | None
    version: int


class WorkspacePage(_Doc):
    items: list[WorkspaceResource]
    next_cursor: str | None
    version: int


class Member(_Doc):
    user_id: str


class MemberPage(_Doc):
    items: list[Member]
    next_cursor: str | None
    version: int


class GrantPage(_Doc):
    items: list[Grant]
    next_cursor: str | None
    version: int


class Change(_Doc):
    version: int
    resource_type: Literal["user", "team", "role", "workspace", "grant"]
    resource_id: str
    op: Literal["upsert", "delete"]
    at: str


class ChangeFeed(_Doc):
    changes: list[Change]
    next_since: int
    version: int
