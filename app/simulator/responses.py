"""The pieces every simulator route module answers with: Intercom's ``error.list`` body, the API
version a request asks for, and the control plane's JSON.

Intercom's routes (``admin_routes``, ``activity_routes``, ``provisioning``) and the ``/_sim``
control planes all build their answers from these, so each shape is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.simulator.state import SimWorkspace
from app.simulator.webhooks import dumps_json, loads_json

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

Answer = tuple[int, dict[str, Any]]
"""An API handler's status and JSON body, before the gateway adds headers (and any fault)."""
ApiHandler = Callable[[Request, str], Answer]
"""A synchronous API handler, given the request and its ``X-Request-Id``."""


def error_list(code: str, message: str | None, request_id: str) -> dict[str, Any]:
    """Intercom's ``error.list`` body."""
    return {
        "type": "error.list",
        "request_id": request_id,
        "errors": [{"code": code, "message": message}],
    }


def not_found(request_id: str) -> Answer:
    """What Intercom answers for a route it does not have (or not in the version asked for)."""
    return 404, error_list("not_found", "Resource Not Found", request_id)


def version_at_least(version: str | None, wanted: tuple[int, int]) -> bool:
    """Whether ``version`` (an ``Intercom-Version``) is ``wanted`` or later; Preview and
    Unstable are later than every numbered version."""
    if version is None:
        return False
    text = version.strip()
    if text.lower() in ("preview", "unstable"):
        return True
    major, _, minor = text.partition(".")
    try:
        return (int(major), int(minor or "0")) >= wanted
    except ValueError:
        return False


def requested_version(request: Request, workspace: SimWorkspace) -> str:
    """The version a request asks for: its ``Intercom-Version``, else the app's pinned one."""
    return request.headers.get("intercom-version", workspace.api_version)


def control_json(payload: Any, status: int = 200) -> Response:
    """A control-plane (``/_sim``) answer."""
    return Response(dumps_json(payload), status_code=status, media_type=JSON_CONTENT_TYPE)


def control_error(message: str, status: int = 400) -> Response:
    """A refused control-plane request: ``{"error": message}``."""
    return control_json({"error": message}, status)


async def read_object(request: Request) -> dict[str, Any]:
    """A control-plane request's JSON object body; ValueError for anything else."""
    try:
        data = loads_json(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data
