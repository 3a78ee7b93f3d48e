"""The simulator's activity-log routes: Intercom's three endpoints and a control plane.

``GET /admins/activity_logs`` (every 2.x version; 20 entries a page), ``POST
/admins/activity_logs/search`` and ``GET /admins/activity_log_event_types`` (2.16+; 404 before,
as for any route a version lacks). Control plane: ``GET``/``POST``/``DELETE /_sim/activity``
lists, records (one entry or ``{"entries": [...]}``) or forgets entries.

Entries are served oldest first, and a page is addressed by number (``page``, or the opaque
``starting_after`` token of ``pages.next``).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.simulator.activity import ACTIVITY_TYPES, SimActivity, describe
from app.simulator.gateway import ApiGateway
from app.simulator.responses import (
    Answer,
    control_error,
    control_json,
    error_list,
    not_found,
    requested_version,
    version_at_least,
)
from app.simulator.state import SimWorkspace

# Search and the event-type list came with this version; the plain list is in every 2.x.
SEARCH_SINCE = (2, 16)

LIST_PER_PAGE = 20
SEARCH_MAX_PER_PAGE = 250


def page_token(page: int) -> str:
    """The opaque ``starting_after`` of ``pages.next``."""
    return base64.urlsafe_b64encode(f"page:{page}".encode()).decode().rstrip("=")


def page_from_token(token: str) -> int:
    """The page a ``starting_after`` token points at; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("starting_after is not a token this API issued") from None
    kind, _, number = raw.partition(":")
    if kind != "page" or not number.isdigit() or int(number) < 1:
        raise ValueError("starting_after is not a token this API issued")
    return int(number)


def activity_log_list(
    entries: list[SimActivity], *, page: int, per_page: int, total: int
) -> dict[str, Any]:
    """The ``activity_log.list`` body for one page."""
    total_pages = max(1, math.ceil(total / per_page)) if total else 0
    more = page < total_pages
    return {
        "type": "activity_log.list",
        "pages": {
            "type": "pages",
            "next": {"per_page": per_page, "starting_after": page_token(page + 1)}
            if more
            else None,
            "page": page,
            "per_page": per_page,
            "total_pages": total_pages,
        },
        "activity_logs": [e.to_json() for e in entries],
    }


class _BadParameter(ValueError):
    pass


def _window(params: Mapping[str, Any]) -> tuple[int, int | None, int]:
    """The time window (from, to or None) and the page a list (in its query) or a search (in
    its body) asks for."""
    lo = _timestamp(params.get("created_at_after"), "created_at_after")
    if lo is None:
        raise _BadParameter("created_at_after is required")
    hi = _timestamp(params.get("created_at_before"), "created_at_before")
    return lo, hi, _page(params.get("page"), params.get("starting_after"))


def _search_filters(body: Mapping[str, Any]) -> tuple[int, frozenset[str] | None]:
    """The page size and the event types (None: all) a search asks for."""
    per_page = body.get("per_page", LIST_PER_PAGE)
    if (
        isinstance(per_page, bool)
        or not isinstance(per_page, int)
        or not 1 <= per_page <= SEARCH_MAX_PER_PAGE
    ):
        raise _BadParameter(f"per_page must be between 1 and {SEARCH_MAX_PER_PAGE}")
    event_types = body.get("event_types")
    if event_types is None:
        return per_page, None
    if not isinstance(event_types, list) or not all(isinstance(t, str) for t in event_types):
        raise _BadParameter("event_types must be a list of strings")
    unknown = sorted(set(event_types) - set(ACTIVITY_TYPES))
    if unknown:
        raise _BadParameter(f"unknown event_types: {unknown}")
    return per_page, frozenset(event_types) if event_types else None


def _timestamp(value: object, name: str) -> int | None:
    # Intercom's own example sends the search times as strings of digits.
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _BadParameter(f"{name} must be a UNIX timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise _BadParameter(f"{name} must be a UNIX timestamp")


def _page(page: object, starting_after: object) -> int:
    if starting_after not in (None, ""):
        if not isinstance(starting_after, str):
            raise _BadParameter("starting_after must be a string")
        try:
            return page_from_token(starting_after)
        except ValueError as exc:
            raise _BadParameter(str(exc)) from None
    if page in (None, ""):
        return 1
    if isinstance(page, str) and page.isdigit():
        page = int(page)
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise _BadParameter("page must be a positive integer")
    return page


def activity_log_routes(gateway: ApiGateway) -> list[Route]:
    """The three API routes, wrapped like every other API route (auth, faults, log)."""
    ws = gateway.ws

    def bad(request_id: str, message: str) -> Answer:
        return 400, error_list("parameter_invalid", message, request_id)

    def version_has_search(request: Request) -> bool:
        return version_at_least(requested_version(request, ws), SEARCH_SINCE)

    def list_logs(request: Request, request_id: str) -> Answer:
        try:
            lo, hi, page = _window(request.query_params)
        except _BadParameter as exc:
            return bad(request_id, str(exc))
        return _answer(ws, lo, hi, types=None, page=page, per_page=LIST_PER_PAGE)

    def search_logs(request: Request, request_id: str) -> Answer:
        if not version_has_search(request):
            return not_found(request_id)
        try:
            body = orjson.loads(request.state.body or b"{}")
        except orjson.JSONDecodeError:
            return bad(request_id, "the body is not JSON")
        if not isinstance(body, dict):
            return bad(request_id, "the body must be a JSON object")
        try:
            lo, hi, page = _window(body)
            per_page, types = _search_filters(body)
        except _BadParameter as exc:
            return bad(request_id, str(exc))
        return _answer(ws, lo, hi, types=types, page=page, per_page=per_page)

    def event_types(request: Request, request_id: str) -> Answer:
        if not version_has_search(request):
            return not_found(request_id)
        return 200, {"type": "activity_log_event_type.list", "event_types": list(ACTIVITY_TYPES)}

    return [
        Route("/admins/activity_logs", gateway.api(list_logs), methods=["GET"]),
        Route("/admins/activity_logs/search", gateway.api(search_logs), methods=["POST"]),
        Route("/admins/activity_log_event_types", gateway.api(event_types), methods=["GET"]),
    ]


def _answer(
    ws: SimWorkspace,
    lo: int,
    hi: int | None,
    *,
    types: frozenset[str] | None,
    page: int,
    per_page: int,
) -> Answer:
    upper = hi if hi is not None else int(time.time())
    entries, total = ws.activity.window(lo, upper, types=types, page=page, per_page=per_page)
    return 200, activity_log_list(entries, page=page, per_page=per_page, total=total)


def activity_log_control_routes(ws: SimWorkspace) -> list[Route]:
    """``/_sim/activity``: record sign-ins and access events, list or forget them."""

    async def activity(request: Request) -> Response:
        if request.method == "GET":
            return control_json({"entries": [e.to_json() for e in ws.activity.entries()]})
        if request.method == "DELETE":
            ws.activity.clear()
            return control_json({"cleared": True})
        try:
            data = orjson.loads(await request.body())
            raw = data.get("entries", [data]) if isinstance(data, dict) else None
            if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                raise ValueError("send one entry object or {'entries': [...]}")
            entries = [_entry(ws, r) for r in raw]
        except (orjson.JSONDecodeError, ValueError) as exc:
            return control_error(str(exc))
        recorded = [e.to_json() for e in entries if ws.activity.record(e)]
        return control_json({"recorded": recorded})

    return [Route("/_sim/activity", activity, methods=["GET", "POST", "DELETE"])]


def _entry(ws: SimWorkspace, data: dict[str, Any]) -> SimActivity:
    """An entry from control-plane JSON, with the teammate's email and a description filled
    in from the workspace when not given."""
    now = int(time.time())
    admin = ws.get_admin(str(data.get("admin_id")))
    filled: dict[str, Any] = dict(data)
    if admin is not None:
        filled.setdefault("email", admin.email)
        filled.setdefault(
            "description", describe(str(data.get("activity_type", "")), admin.name or admin.email)
        )
    filled.setdefault("ip", "198.51.100.23")
    if filled.get("activity_type") == "admin_login_success":
        filled.setdefault("metadata", {"sign_in_method": "email_password"})
    return SimActivity.from_dict(filled, now=now)
