"""The simulator's write endpoints, as Intercom documents them, and their switches.

- ``DELETE /admins/remove`` (API 2.17 and Preview; other versions 404): query ``admin_id`` and
  all four ``reassign_*`` (any missing: 404, not 200; ``0`` = leave unassigned). Without the
  ``remove_admins`` scope: 403. Answers ``{"type": "admin", "id"}`` and sends
  ``admin.removed_from_workspace`` to the subscribed webhook URLs.
- ``PUT /teams/{id}`` (``Intercom-Version: Preview`` only, else 404): ``{"admin_ids": [1..1000],
  "admin_priority_level"?}`` replaces the members; an empty list is refused (Intercom cannot
  empty a team). 403 ``api_plan_restricted`` without the managed-availability feature, 403
  ``forbidden`` when the acting teammate lacks the permission, and queued 409s: ``declined``
  (nothing written) or ``partial`` (written, then answered 409: "read the team and try again").

The control plane ``GET``/``PUT /_sim/provisioning`` reads and sets the switches::

    {"remove_admins_scope": true, "team_writes": "enabled" | "api_plan_restricted" | "forbidden",
     "conflicts": ["declined", "partial"], "webhook_urls": ["http://…/webhooks/intercom"],
     "webhook_secret": null, "deliveries": [...]}  (deliveries: read-only, what was sent)
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.simulator.admin_routes import team_rest_item
from app.simulator.responses import (
    Answer,
    control_error,
    control_json,
    error_list,
    not_found,
    read_object,
    requested_version,
    version_at_least,
)
from app.simulator.state import SimWorkspace
from app.simulator.webhooks import (
    admin_webhook_item,
    build_notification,
    encode_notification,
    send_webhook_async,
)

REASSIGN_PARAMS = (
    "reassign_messages_admin_id",
    "reassign_owner_admin_id",
    "reassign_articles_author_id",
    "reassign_conversations_admin_id",
)
TEAM_WRITE_MODES = ("enabled", "api_plan_restricted", "forbidden")
CONFLICT_KINDS = {
    "declined": "The request was declined before anything was written. Try again.",
    "partial": "The request was partly applied. Read the team and try again.",
}
MAX_ADMIN_IDS = 1000


@dataclass
class ProvisioningControl:
    """The switches of the write endpoints, and the webhooks a removal sent."""

    remove_admins_scope: bool = True
    team_writes: str = "enabled"
    conflicts: list[str] = field(default_factory=list)
    webhook_urls: list[str] = field(default_factory=list)
    webhook_secret: str | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "remove_admins_scope": self.remove_admins_scope,
                "team_writes": self.team_writes,
                "conflicts": list(self.conflicts),
                "webhook_urls": list(self.webhook_urls),
                "webhook_secret": self.webhook_secret,
                "deliveries": list(self.deliveries),
            }

    def update(self, data: dict[str, Any]) -> None:
        """Set the switches named in ``data`` (validated first: all or nothing)."""
        unknown = set(data) - {
            "remove_admins_scope",
            "team_writes",
            "conflicts",
            "webhook_urls",
            "webhook_secret",
        }
        if unknown:
            raise ValueError(f"unknown provisioning switch: {sorted(unknown)[0]}")
        scope = data.get("remove_admins_scope", self.remove_admins_scope)
        if not isinstance(scope, bool):
            raise ValueError("'remove_admins_scope' must be a boolean")
        mode = data.get("team_writes", self.team_writes)
        if mode not in TEAM_WRITE_MODES:
            raise ValueError(f"'team_writes' must be one of {', '.join(TEAM_WRITE_MODES)}")
        conflicts = data.get("conflicts", self.conflicts)
        if not isinstance(conflicts, list) or any(c not in CONFLICT_KINDS for c in conflicts):
            raise ValueError("'conflicts' must be a list of 'declined' or 'partial'")
        urls = data.get("webhook_urls", self.webhook_urls)
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError("'webhook_urls' must be a list of URLs")
        secret = data.get("webhook_secret", self.webhook_secret)
        if secret is not None and not isinstance(secret, str):
            raise ValueError("'webhook_secret' must be a string or null")
        with self.lock:
            self.remove_admins_scope = scope
            self.team_writes = mode
            self.conflicts = list(conflicts)
            self.webhook_urls = list(urls)
            self.webhook_secret = secret

    def take_conflict(self) -> str | None:
        with self.lock:
            return self.conflicts.pop(0) if self.conflicts else None


def _is_preview(version: str | None) -> bool:
    return version is not None and version.strip().lower() == "preview"


class ProvisioningEndpoints:
    """The write handlers, bound to one workspace and its switches."""

    def __init__(
        self, workspace: SimWorkspace, control: ProvisioningControl, *, client_secret: str
    ) -> None:
        self.ws = workspace
        self.control = control
        self.client_secret = client_secret
        self._tasks: set[asyncio.Task[None]] = set()

    def remove_admin(self, request: Request, request_id: str) -> Answer:
        if not version_at_least(requested_version(request, self.ws), (2, 17)):
            return not_found(request_id)
        if not self.control.remove_admins_scope:
            return 403, error_list(
                "forbidden", "The access token does not have the remove_admins scope", request_id
            )
        query = request.query_params
        admin_id = query.get("admin_id")
        targets = [query.get(name) for name in REASSIGN_PARAMS]
        # Intercom answers 404 (not 200, not 400) when any reassign_* is left out.
        if admin_id is None or any(t is None for t in targets):
            return not_found(request_id)
        for target in targets:
            if target != "0" and self.ws.get_admin(str(target)) is None:
                return 404, error_list("admin_not_found", "Admin not found", request_id)
        admin = self.ws.get_admin(admin_id)
        if admin is None:
            return 404, error_list("admin_not_found", "Admin not found", request_id)
        created_at = int(time.time())
        self.ws.remove_admin(admin_id)
        admin.team_ids = []  # the notification carries the memberships already cleared
        self._notify(admin_webhook_item(admin), created_at)
        return 200, {"type": "admin", "id": admin_id}

    def _notify(self, item: dict[str, Any], created_at: int) -> None:
        envelope = build_notification(
            "admin.removed_from_workspace", item, app_id=self.ws.id_code, created_at=created_at
        )
        body = encode_notification(envelope)
        with self.control.lock:
            urls = list(self.control.webhook_urls)
            secret = self.control.webhook_secret or self.client_secret
        for url in urls:
            task = asyncio.get_running_loop().create_task(self._deliver(url, body, secret, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, secret: str, item: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "topic": "admin.removed_from_workspace",
            "admin_id": str(item["id"]),
            "url": url,
        }
        try:
            sent = await send_webhook_async(url, body, secret)
            record["status"] = sent.status_code
        except httpx.HTTPError as exc:
            record["status"] = None
            record["error"] = type(exc).__name__
        with self.control.lock:
            self.control.deliveries.append(record)

    def put_team(self, request: Request, request_id: str) -> Answer:
        if not _is_preview(requested_version(request, self.ws)):
            return not_found(request_id)
        if self.control.team_writes == "api_plan_restricted":
            return 403, error_list(
                "api_plan_restricted", "This feature is not available on your plan", request_id
            )
        if self.control.team_writes == "forbidden":
            return 403, error_list(
                "forbidden", "The teammate lacks the permission to manage teams", request_id
            )
        team_id = request.path_params["team_id"]
        if self.ws.get_team(team_id) is None:
            return 404, error_list("team_not_found", "Team not found", request_id)
        ids = _admin_ids(request.state.body)
        if isinstance(ids, str):
            return 400, error_list("parameter_invalid", ids, request_id)
        unknown = [a for a in ids if self.ws.get_admin(a) is None]
        if unknown:
            return 400, error_list(
                "parameter_invalid", f"Unknown admin id {unknown[0]}", request_id
            )
        conflict = self.control.take_conflict()
        if conflict == "declined":
            return 409, error_list("conflict", CONFLICT_KINDS[conflict], request_id)
        self._set_members(team_id, ids)
        if conflict == "partial":
            return 409, error_list("conflict", CONFLICT_KINDS[conflict], request_id)
        team = self.ws.get_team(team_id)
        assert team is not None
        return 200, team_rest_item(team)

    def _set_members(self, team_id: str, ids: list[str]) -> None:
        team = self.ws.get_team(team_id)
        assert team is not None
        for old in set(team.admin_ids) - set(ids):
            self.ws.remove_member(team_id, old)
        for new in ids:
            self.ws.add_member(team_id, new)

    async def control_plane(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                self.control.update(await read_object(request))
            except ValueError as exc:
                return control_error(str(exc))
        return control_json(self.control.to_dict())


def _admin_ids(raw: bytes) -> list[str] | str:
    """The body's ``admin_ids`` as strings, or the reason Intercom would refuse it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "Request body is not valid JSON"
    if not isinstance(body, dict) or not isinstance(body.get("admin_ids"), list):
        return "admin_ids is required"
    ids: list[str] = []
    for entry in body["admin_ids"]:
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            return "admin_ids must be ids"
        ids.append(str(entry))
    if not ids:
        return "admin_ids cannot be empty: a team cannot be emptied"
    if len(ids) > MAX_ADMIN_IDS:
        return f"admin_ids can hold at most {MAX_ADMIN_IDS} ids"
    return list(dict.fromkeys(ids))
