"""The ``/_sim`` control plane: how tests, the demo and benchmarks read and change the simulated
workspace, queue faults, read the request log and have a signed webhook sent.

``GET``/``PUT /_sim/state``, ``POST /_sim/admins``, ``DELETE /_sim/admins/{id}`` (likewise
teams), ``GET``/``POST``/``DELETE /_sim/faults``, ``GET``/``DELETE /_sim/requests``, ``POST
/_sim/webhooks/send``. These routes need no auth and are never recorded or faulted; refusals
answer 400 ``{"error": message}``. The activity log's and the write endpoints' control planes are
beside their routes (``activity_routes``, ``provisioning``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.intercom.signature import sign_body
from app.simulator.faults import Fault
from app.simulator.records import SimAdmin, SimTeam
from app.simulator.responses import control_error, control_json, read_object
from app.simulator.state import SimWorkspace
from app.simulator.webhooks import (
    DELIVERY_TIMEOUT_SECONDS,
    build_notification,
    default_item,
    encode_notification,
    send_webhook_async,
)

_Record = TypeVar("_Record", SimAdmin, SimTeam)


class ControlPlane:
    """The control-plane handlers, bound to one workspace and its webhook secret."""

    def __init__(self, workspace: SimWorkspace, client_secret: str) -> None:
        self.ws = workspace
        self.client_secret = client_secret
        # One pooled client per event loop: a restarted server runs a fresh loop.
        self._http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def routes(self) -> list[Route]:
        """The control plane's routes."""
        return [
            Route("/_sim/state", self.state, methods=["GET", "PUT"]),
            Route("/_sim/admins", self.upsert_admin, methods=["POST"]),
            Route("/_sim/admins/{admin_id}", self.delete_admin, methods=["DELETE"]),
            Route("/_sim/teams", self.upsert_team, methods=["POST"]),
            Route("/_sim/teams/{team_id}", self.delete_team, methods=["DELETE"]),
            Route("/_sim/faults", self.faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/requests", self.requests, methods=["GET", "DELETE"]),
            Route("/_sim/webhooks/send", self.send_webhook, methods=["POST"]),
        ]

    async def state(self, request: Request) -> Response:
        if request.method == "GET":
            return control_json(self.ws.to_dict())
        strict = request.query_params.get("strict", "true").lower() != "false"
        try:
            self.ws.load_dict(await read_object(request), strict=strict)
        except ValueError as exc:
            return control_error(str(exc))
        return control_json({"admins": len(self.ws.admins), "teams": len(self.ws.teams)})

    async def upsert_admin(self, request: Request) -> Response:
        return await self._upsert(request, SimAdmin, self.ws.get_admin, self.ws.upsert_admin)

    async def upsert_team(self, request: Request) -> Response:
        return await self._upsert(request, SimTeam, self.ws.get_team, self.ws.upsert_team)

    async def _upsert(
        self,
        request: Request,
        kind: type[_Record],
        current: Callable[[str], _Record | None],
        upsert: Callable[[_Record], _Record],
    ) -> Response:
        # Keys the body leaves out keep the stored record's values.
        try:
            data = await read_object(request)
            record = upsert(kind.from_dict(data, base=current(str(data.get("id")))))
        except ValueError as exc:
            return control_error(str(exc))
        return control_json(record.to_dict())

    async def delete_admin(self, request: Request) -> Response:
        return control_json({"deleted": self.ws.remove_admin(request.path_params["admin_id"])})

    async def delete_team(self, request: Request) -> Response:
        return control_json({"deleted": self.ws.remove_team(request.path_params["team_id"])})

    async def faults(self, request: Request) -> Response:
        if request.method == "GET":
            return control_json({"faults": [f.to_dict() for f in self.ws.faults()]})
        if request.method == "DELETE":
            self.ws.clear_faults()
            return control_json({"cleared": True})
        try:
            fault = self.ws.add_fault(Fault.from_dict(await read_object(request)))
        except ValueError as exc:
            return control_error(str(exc))
        return control_json(fault.to_dict())

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.ws.clear_requests()
            return control_json({"cleared": True})
        path = request.query_params.get("path") or None
        return control_json({"requests": [r.to_dict() for r in self.ws.requests(path)]})

    async def send_webhook(self, request: Request) -> Response:
        try:
            data = await read_object(request)
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
            return control_error(str(exc).strip("'\""), 404)
        except (ValueError, TypeError) as exc:
            return control_error(str(exc))

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
        return control_json(answer)

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop:
            self._http = (loop, httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_SECONDS))
        return self._http[1]
