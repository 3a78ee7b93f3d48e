"""What every Intercom API request passes through before its handler, and the answer after it.

In order: the request log, a queued fault (its delay, then its error), the rate-limit window and
its ``X-RateLimit-*`` headers, the bearer token, the ``Intercom-Version`` header; then the handler,
whose answer a fault may still replace (a wrong status, a wrong shape, bytes that are not JSON).
The handlers themselves (``admin_routes``, ``activity_routes``, ``provisioning``) only answer.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.simulator.faults import Fault, with_non_object_items, wrong_shape
from app.simulator.responses import (
    JSON_CONTENT_TYPE,
    Answer,
    ApiHandler,
    control_error,
    error_list,
)
from app.simulator.state import RecordedRequest, SimWorkspace
from app.simulator.webhooks import dumps_json

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
_HTML_CONTENT_TYPE = "text/html; charset=utf-8"

Endpoint = Callable[[Request], Awaitable[Response]]


class ApiGateway:
    """Wraps API handlers for one workspace and one access token."""

    def __init__(self, workspace: SimWorkspace, access_token: str) -> None:
        self.ws = workspace
        self.expected_auth = f"bearer {access_token}"

    def api(self, handler: ApiHandler) -> Endpoint:
        """Wrap a REST handler with logging, faults, auth and the rate-limit headers."""

        async def endpoint(request: Request) -> Response:
            return await self._serve(request, handler)

        return endpoint

    async def _serve(self, request: Request, handler: ApiHandler) -> Response:
        path = request.url.path
        if path.startswith("/_sim"):
            return control_error("no such control-plane route", 404)
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
        # Handlers are synchronous: a POST's or PUT's JSON body is read for them here.
        request.state.body = await request.body() if request.method in ("POST", "PUT") else b""

        if fault is not None and fault.body is None and (fault.status or 0) >= 400:
            return _fault_error(fault, request_id, headers)

        status, payload = (
            self._authorize(request, request_id)
            or _check_version(request, request_id)
            or handler(request, request_id)
        )
        if fault is not None and fault.status is not None and fault.status < 400:
            status = fault.status
        if fault is None or fault.body is None:
            return Response(
                dumps_json(payload), status, headers=headers, media_type=JSON_CONTENT_TYPE
            )
        return _fault_body(fault, path, payload, headers)

    def _authorize(self, request: Request, request_id: str) -> Answer | None:
        # The scheme is case-insensitive in HTTP; the token itself is not.
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if f"{scheme.lower()} {token.strip()}" == self.expected_auth:
            return None
        return 401, error_list("unauthorized", "Access Token Invalid", request_id)


def _check_version(request: Request, request_id: str) -> Answer | None:
    version = request.headers.get("intercom-version")
    if version is None or version in KNOWN_API_VERSIONS:
        return None
    return 400, error_list(
        "intercom_version_invalid", "The requested version could not be found", request_id
    )


def _fault_error(fault: Fault, request_id: str, headers: dict[str, str]) -> Response:
    """The error a fault with an error status answers with, instead of calling the handler."""
    status = fault.status or 500
    if status in _EDGE_HTML and fault.error_code is None and fault.message is None:
        # Gateway errors come from Intercom's edge, as HTML, not from its API.
        return Response(_EDGE_HTML[status], status, headers=headers, media_type=_HTML_CONTENT_TYPE)
    fallback = "server_error" if status >= 500 else "client_error"
    code = fault.error_code or _DEFAULT_ERROR_CODES.get(status, fallback)
    message = fault.message or _ERROR_MESSAGES.get(code, "Error")
    body = orjson.dumps(error_list(code, message, request_id))
    return Response(body, status, headers=headers, media_type=JSON_CONTENT_TYPE)


def _fault_body(fault: Fault, path: str, payload: Any, headers: dict[str, str]) -> Response:
    """The handler's answer spoilt the way a fault with a ``body`` asks."""
    status = fault.status if fault.status is not None else 200
    if fault.body == "not_json":
        return Response(
            b"<html>oops</html>", status, headers=headers, media_type=_HTML_CONTENT_TYPE
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
