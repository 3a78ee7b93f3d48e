"""The simulator's ASGI app: Intercom's REST shapes plus a ``/_sim/`` control plane.

API routes (``/me``, ``/admins``, ``/teams`` …) need ``Authorization: Bearer <token>``, carry the
``X-RateLimit-*`` headers and are recorded in the workspace's request log; queued faults are applied
before normal handling. ``/_sim/*`` routes need no auth and are never recorded or faulted.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.gc_pause import gc_paused
from app.intercom.signature import sign_body
from app.simulator.activity_routes import activity_log_control_routes, activity_log_routes
from app.simulator.faults import Fault, with_non_object_items, wrong_shape
from app.simulator.provisioning import ProvisioningControl, ProvisioningEndpoints, with_body
from app.simulator.records import SimAdmin, SimTeam
from app.simulator.state import RecordedRequest, SimWorkspace
from app.simulator.webhooks import (
    DEFAULT_AVATAR_URL,
    DELIVERY_TIMEOUT_SECONDS,
    build_notification,
    default_item,
    dumps_json,
    encode_notification,
    intercom_id,
    loads_json,
    send_webhook_async,
)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
APP_CREATED_AT = 1734537243

_DEFAULT_ERROR_CODES = {
    400: "parameter_invalid",
    401: "unauthorized",
    403: "api_plan_restricted",
    404: "not_found",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_ERROR_MESSAGES = {
    "unauthorized": "Access Token Invalid",
    "token_revoked": "Token revoked",
    "token_blocked": "Token blocked",
    "token_not_found": "Token not found",
    "token_expired": "Token expired",
    "token_unauthorized": "Token not authorized for this resource",
    "missing_authorization": "Missing authorization",
    "forbidden": "You are not authorized to access this resource",
    "api_plan_restricted": "Active subscription needed.",
    "rate_limit_exceeded": "The rate limit for the App has been exceeded",
    "too_many_requests": "Too many requests",
    "server_error": "Server Error",
    "bad_gateway": "Bad Gateway",
    "service_unavailable": "Sorry, the API service is temporarily unavailable",
    "gateway_timeout": "Gateway Timeout",
    "not_found": "Resource Not Found",
    "admin_not_found": "Admin not found",
    "team_not_found": "Team not found",
}

# The versions Intercom answers to (its OpenAPI enums: 1.0–1.4, 2.0–2.16, and Preview; its
# docs site has 2.17 pages). Anything else, "Unstable" and "preview" included, is a 400.
KNOWN_API_VERSIONS = frozenset(
    [f"1.{minor}" for minor in range(5)] + [f"2.{minor}" for minor in range(18)] + ["Preview"]
)
# 502 and 504 answer from the load balancer in front of the API: HTML, not an error.list.
_EDGE_HTML = {
    502: b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center></body></html>\n",
    504: b"<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway"
    b" Time-out</h1></center></body></html>\n",
}

# Shared, never mutated: orjson serialises it the same for every admin.
_EMPTY: dict[str, Any] = {}

_Answer = tuple[int, dict[str, Any]]
_Handler = Callable[[Request, str], _Answer]
_Endpoint = Callable[[Request], Awaitable[Response]]


def error_list(code: str, message: str | None, request_id: str) -> dict[str, Any]:
    """Intercom's ``error.list`` body."""
    return {
        "type": "error.list",
        "request_id": request_id,
        "errors": [{"code": code, "message": message}],
    }


def role_visible(intercom_version: str | None) -> bool:
    """Whether ``admin.role`` exists in this API version (2.16+, Preview/Unstable)."""
    if intercom_version is None:
        return False
    version = intercom_version.strip()
    if version.lower() in ("preview", "unstable"):
        return True
    major, _, minor = version.partition(".")
    try:
        return (int(major), int(minor or "0")) >= (2, 16)
    except ValueError:
        return False


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


def _control(payload: Any, status: int = 200) -> Response:
    return Response(dumps_json(payload), status_code=status, media_type=JSON_CONTENT_TYPE)


def _control_error(message: str, status: int = 400) -> Response:
    return _control({"error": message}, status)


async def _read_object(request: Request) -> dict[str, Any]:
    try:
        data = loads_json(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


class _Simulator:
    """Route handlers bound to one workspace and one set of credentials."""

    def __init__(self, workspace: SimWorkspace, access_token: str, client_secret: str) -> None:
        self.ws = workspace
        self.expected_auth = f"bearer {access_token}"
        self.client_secret = client_secret
        # One pooled client per event loop: a restarted server runs a fresh loop.
        self._http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    # -- API plumbing -------------------------------------------------------------------------

    def api(self, handler: _Handler) -> _Endpoint:
        """Wrap a REST handler with logging, faults, auth and the rate-limit headers."""

        async def endpoint(request: Request) -> Response:
            return await self._serve_api(request, handler)

        return endpoint

    async def _serve_api(self, request: Request, handler: _Handler) -> Response:
        path = request.url.path
        if path.startswith("/_sim"):
            return _control_error("no such control-plane route", 404)
        self.ws.record_request(
            RecordedRequest(
                method=request.method,
                path=path,
                query=request.url.query,
                headers=dict(request.headers.items()),
                at=time.time(),
            )
        )
        request_id = str(uuid.uuid4())
        fault = self.ws.take_fault(path)
        if fault is not None and fault.delay_seconds > 0:
            await asyncio.sleep(fault.delay_seconds)

        remaining, reset = self.ws.count_rate_limit(time.time())
        over_limit = remaining < 0 and self.ws.enforce_rate_limit
        if fault is not None and fault.status == 429:
            remaining, reset = 0, math.ceil(time.time() + fault.reset_in_seconds)
        headers = {
            "X-RateLimit-Limit": str(self.ws.rate_limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(reset),
            "X-Request-Id": request_id,
        }
        if over_limit and fault is None:
            fault = Fault(path=path, status=429)
        # Handlers are synchronous: a POST's JSON body is read for them here.
        request.state.body = await request.body() if request.method == "POST" else b""

        if fault is not None and fault.body is None and (fault.status or 0) >= 400:
            return self._fault_error(fault, request_id, headers)

        status, payload = (
            self._authorize(request, request_id)
            or self._check_version(request, request_id)
            or handler(request, request_id)
        )
        if fault is not None and fault.status is not None and fault.status < 400:
            status = fault.status
        if fault is None or fault.body is None:
            return Response(
                dumps_json(payload), status, headers=headers, media_type=JSON_CONTENT_TYPE
            )
        status = fault.status if fault.status is not None else 200
        if fault.body == "not_json":
            return Response(
                b"<html>oops</html>", status, headers=headers, media_type="text/html; charset=utf-8"
            )
        if fault.body == "empty_admins":
            payload = {"type": "admin.list", "admins": []}
        if fault.body == "wrong_shape":
            payload = wrong_shape(path, payload)
        if fault.body == "non_object_items":
            payload = with_non_object_items(payload)
        body = orjson.dumps(payload)
        if fault.body == "truncated":
            body = body[: len(body) // 2]
        return Response(body, status, headers=headers, media_type=JSON_CONTENT_TYPE)

    def _fault_error(self, fault: Fault, request_id: str, headers: dict[str, str]) -> Response:
        status = fault.status or 500
        if status in _EDGE_HTML and fault.error_code is None and fault.message is None:
            # Gateway errors come from Intercom's edge, as HTML, not from its API.
            return Response(
                _EDGE_HTML[status], status, headers=headers, media_type="text/html; charset=utf-8"
            )
        fallback = "server_error" if status >= 500 else "client_error"
        code = fault.error_code or _DEFAULT_ERROR_CODES.get(status, fallback)
        message = fault.message or _ERROR_MESSAGES.get(code, "Error")
        body = orjson.dumps(error_list(code, message, request_id))
        return Response(body, status, headers=headers, media_type=JSON_CONTENT_TYPE)

    def _authorize(self, request: Request, request_id: str) -> _Answer | None:
        # The scheme is case-insensitive in HTTP; the token itself is not.
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if f"{scheme.lower()} {token.strip()}" == self.expected_auth:
            return None
        return 401, error_list("unauthorized", "Access Token Invalid", request_id)

    def _check_version(self, request: Request, request_id: str) -> _Answer | None:
        version = request.headers.get("intercom-version")
        if version is None or version in KNOWN_API_VERSIONS:
            return None
        return 400, error_list(
            "intercom_version_invalid", "The requested version could not be found", request_id
        )

    # -- API handlers -------------------------------------------------------------------------

    def me(self, request: Request, request_id: str) -> _Answer:
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
        return role_visible(request.headers.get("intercom-version", self.ws.api_version))

    def list_admins(self, request: Request, request_id: str) -> _Answer:
        body = render_admin_list(
            self.ws,
            with_role=self._with_role(request),
            with_avatar=_query_flag(request, "display_avatar"),
        )
        return 200, body

    def get_admin(self, request: Request, request_id: str) -> _Answer:
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

    def list_teams(self, request: Request, request_id: str) -> _Answer:
        return 200, render_team_list(self.ws)

    def get_team(self, request: Request, request_id: str) -> _Answer:
        team = self.ws.get_team(request.path_params["team_id"])
        if team is None:
            return 404, error_list("team_not_found", "Team not found", request_id)
        return 200, team_rest_item(team)

    def unknown(self, request: Request, request_id: str) -> _Answer:
        return 404, error_list("not_found", "Resource Not Found", request_id)

    # -- control plane ------------------------------------------------------------------------

    async def state(self, request: Request) -> Response:
        if request.method == "GET":
            return _control(self.ws.to_dict())
        strict = request.query_params.get("strict", "true").lower() != "false"
        try:
            self.ws.load_dict(await _read_object(request), strict=strict)
        except ValueError as exc:
            return _control_error(str(exc))
        return _control({"admins": len(self.ws.admins), "teams": len(self.ws.teams)})

    async def upsert_admin(self, request: Request) -> Response:
        try:
            data = await _read_object(request)
            base = self.ws.get_admin(str(data.get("id")))
            admin = self.ws.upsert_admin(SimAdmin.from_dict(data, base=base))
        except ValueError as exc:
            return _control_error(str(exc))
        return _control(admin.to_dict())

    async def delete_admin(self, request: Request) -> Response:
        return _control({"deleted": self.ws.remove_admin(request.path_params["admin_id"])})

    async def upsert_team(self, request: Request) -> Response:
        try:
            data = await _read_object(request)
            base = self.ws.get_team(str(data.get("id")))
            team = self.ws.upsert_team(SimTeam.from_dict(data, base=base))
        except ValueError as exc:
            return _control_error(str(exc))
        return _control(team.to_dict())

    async def delete_team(self, request: Request) -> Response:
        return _control({"deleted": self.ws.remove_team(request.path_params["team_id"])})

    async def faults(self, request: Request) -> Response:
        if request.method == "GET":
            return _control({"faults": [f.to_dict() for f in self.ws.faults()]})
        if request.method == "DELETE":
            self.ws.clear_faults()
            return _control({"cleared": True})
        try:
            fault = self.ws.add_fault(Fault.from_dict(await _read_object(request)))
        except ValueError as exc:
            return _control_error(str(exc))
        return _control(fault.to_dict())

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.ws.clear_requests()
            return _control({"cleared": True})
        path = request.query_params.get("path") or None
        return _control({"requests": [r.to_dict() for r in self.ws.requests(path)]})

    async def send_webhook(self, request: Request) -> Response:
        try:
            data = await _read_object(request)
            url, topic = data.get("url"), data.get("topic")
            if not isinstance(url, str) or not isinstance(topic, str):
                raise ValueError("'url' and 'topic' are required strings")
            secret = data.get("secret", self.client_secret)
            if not isinstance(secret, str):
                raise ValueError("'secret' must be a string")
            item = data.get("item")
            if item is None:
                admin_id = data.get("admin_id")
                item = default_item(
                    self.ws,
                    topic,
                    admin_id=str(admin_id) if admin_id is not None else None,
                    activity_type=str(
                        data.get("activity_type", "app_team_membership_modification")
                    ),
                )
            created_at, notification_id = data.get("created_at"), data.get("id")
            if created_at is not None and (
                isinstance(created_at, bool) or not isinstance(created_at, int)
            ):
                raise ValueError("'created_at' must be an integer unix timestamp")
            if notification_id is not None and not isinstance(notification_id, str):
                raise ValueError("'id' must be a string")
            if not isinstance(item, dict):
                raise ValueError("'item' must be a JSON object")
            envelope = build_notification(
                topic,
                item,
                app_id=str(data.get("app_id") or self.ws.id_code),
                created_at=created_at,
                notification_id=notification_id,
            )
            timeout = float(data.get("timeout", DELIVERY_TIMEOUT_SECONDS))
        except LookupError as exc:
            return _control_error(str(exc).strip("'\""), 404)
        except (ValueError, TypeError) as exc:
            return _control_error(str(exc))

        body = encode_notification(envelope)
        answer: dict[str, Any] = {"notification": envelope, "signature": sign_body(body, secret)}
        try:
            sent = await send_webhook_async(
                url, body, secret, client=self._client(), timeout_seconds=timeout
            )
        except httpx.HTTPError as exc:
            answer.update(status=None, body=None, error=f"{type(exc).__name__}: {exc}")
        else:
            answer.update(status=sent.status_code, body=sent.text)
        return _control(answer)

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop:
            self._http = (loop, httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_SECONDS))
        return self._http[1]


def create_simulator_app(
    workspace: SimWorkspace, *, access_token: str, client_secret: str
) -> Starlette:
    """An ASGI app that serves ``workspace`` the way Intercom's REST API would."""
    sim = _Simulator(workspace, access_token, client_secret)
    provisioning = ProvisioningEndpoints(
        workspace,
        ProvisioningControl(),
        client_secret=client_secret,
        error_list=error_list,
        team_item=team_rest_item,
    )
    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/_sim/state", sim.state, methods=["GET", "PUT"]),
        Route("/_sim/admins", sim.upsert_admin, methods=["POST"]),
        Route("/_sim/admins/{admin_id}", sim.delete_admin, methods=["DELETE"]),
        Route("/_sim/teams", sim.upsert_team, methods=["POST"]),
        Route("/_sim/teams/{team_id}", sim.delete_team, methods=["DELETE"]),
        Route("/_sim/faults", sim.faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/requests", sim.requests, methods=["GET", "DELETE"]),
        Route("/_sim/webhooks/send", sim.send_webhook, methods=["POST"]),
        Route("/_sim/provisioning", provisioning.control_plane, methods=["GET", "PUT"]),
        # The write endpoints (app/simulator/provisioning.py), before the read routes.
        Route("/admins/remove", sim.api(provisioning.remove_admin), methods=["DELETE"]),
        Route(
            "/teams/{team_id}",
            with_body(sim.api(provisioning.put_team)),
            methods=["PUT"],
        ),
        *activity_log_control_routes(sim.ws),
        Route("/me", sim.api(sim.me), methods=["GET"]),
        Route("/admins", sim.api(sim.list_admins), methods=["GET"]),
        # Before /admins/{admin_id}, which would otherwise take them for a teammate's id.
        *activity_log_routes(sim),
        Route("/admins/{admin_id}", sim.api(sim.get_admin), methods=["GET"]),
        Route("/teams", sim.api(sim.list_teams), methods=["GET"]),
        Route("/teams/{team_id}", sim.api(sim.get_team), methods=["GET"]),
        # Anything else still behaves like Intercom (auth, faults, log) and answers 404.
        Route("/{path:path}", sim.api(sim.unknown), methods=any_method),
    ]
    app = Starlette(routes=routes)
    app.state.provisioning = provisioning.control
    return app
