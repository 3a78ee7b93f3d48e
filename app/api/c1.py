"""The C1 read API under `/api/v1` (read token): snapshot, paginated views, single resources,
change feed.

The snapshot has one home here: its route, the prepared response both answers share, and the
poll fast path (SnapshotFastPath), which answers `GET /api/v1/snapshot` ahead of FastAPI's
routing and dependency machinery: they cost several times the answer itself when the answer is
a 304 or cached bytes. The fast path takes only requests that can only succeed: no query
string, a valid read token, a synced store. Anything else (no or wrong token,
`?include_removed=`, not synced yet, a store error) goes on to the normal route unchanged,
which produces the usual answer or error. It sits inside RequestIdMiddleware, so request ids
and access lines are as for any request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import bearer_token, require_token, token_matches
from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.api.schemas import (
    ChangeFeed,
    ErrorBody,
    GrantPage,
    MemberPage,
    Role,
    RolePage,
    Snapshot,
    Team,
    TeamPage,
    User,
    UserPage,
    WorkspacePage,
    WorkspaceResource,
)
from app.services import Services
from app.snapshot import views
from app.snapshot.cache import SnapshotBody
from app.store.read_errors import NotSynced


async def require_reader(request: Request, services: ServicesDep) -> None:
    # async: a constant-time compare of a few tokens needs no thread (see get_services).
    require_token(
        request, services.settings.read_api_tokens, kind="read", variable="READ_API_TOKENS"
    )


_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown read token."},
    503: {"model": ErrorBody, "description": "No baseline has succeeded yet (`not_synced`)."},
}
router = APIRouter(
    prefix="/api/v1", tags=["c1"], dependencies=[Depends(require_reader)], responses=_COMMON
)
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000.")]
Cursor = Annotated[str | None, Query(description="Opaque cursor from `next_cursor`.")]
_PAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad `limit` or `invalid_cursor`."}
}


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


async def _read(services: Services, fn: Callable[[Session], dict[str, Any]]) -> Response:
    def run() -> dict[str, Any]:
        with services.db.reading() as session:
            return fn(session)

    return _json(await run_in_threadpool(run))


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header == etag:  # what a poller sends back; the general parse below says the same
        return True
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            try:
                return not quality or float(quality) > 0
            except ValueError:
                return True
    return False


@router.get(
    "/snapshot",
    summary="The whole workspace at one store version",
    responses={200: {"model": Snapshot}, 304: {"description": "Unchanged since ETag."}},
)
async def snapshot(
    request: Request,
    services: ServicesDep,
    include_removed: Annotated[bool, Query(description="Also list removed teammates.")] = False,
) -> Response:
    """Serialized once per version and gzip-encoded when accepted; `If-None-Match` → 304."""
    body = await services.snapshots.get(include_removed=include_removed)
    return snapshot_response(
        body, request.headers.get("if-none-match"), request.headers.get("accept-encoding")
    )


def snapshot_response(
    body: SnapshotBody, if_none_match: str | None, accept_encoding: str | None
) -> Response:
    """The answer for a cached body (shared with SnapshotFastPath, so both answer alike).

    Its headers are exactly those of `Response(content, media_type="application/json",
    headers={"ETag": …, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", …})`, in the
    same order, written directly: this runs for every C1 poll, and Starlette's generic header
    building was a measurable part of a 304."""
    headers = [
        (b"etag", body.etag.encode("latin-1")),
        (b"cache-control", b"no-cache"),
        (b"vary", b"Accept-Encoding"),
    ]
    if _etag_matches(if_none_match, body.etag):
        return _PreparedResponse(304, headers, b"")
    if _accepts_gzip(accept_encoding):
        headers.append((b"content-encoding", b"gzip"))
        content = body.gzipped
    else:
        content = body.raw
    headers.append((b"content-length", str(len(content)).encode("latin-1")))
    headers.append((b"content-type", b"application/json"))
    return _PreparedResponse(200, headers, content)


class _PreparedResponse(Response):
    """A Response whose raw headers are already built (see snapshot_response)."""

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes):
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


logger = logging.getLogger(__name__)
SNAPSHOT_PATH = "/api/v1/snapshot"


class SnapshotFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == SNAPSHOT_PATH
            and not scope.get("query_string")
        ):
            response = await self._answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        if services is None:
            return None
        # One pass over the raw headers for the three that matter, each taken at its first
        # occurrence as starlette.datastructures.Headers.get does (names arrive lower-cased).
        authorization = if_none_match = accept_encoding = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if if_none_match is None:
                    if_none_match = value.decode("latin-1")
            elif name == b"accept-encoding" and accept_encoding is None:
                accept_encoding = value.decode("latin-1")
        token = bearer_token(authorization)
        allowed = services.settings.read_api_tokens
        if token is None or not allowed or not token_matches(token, allowed):
            return None
        try:
            body = await services.snapshots.get(include_removed=False)
        except NotSynced:
            return None
        except Exception:
            # The route will meet the same problem and answer it the usual way.
            logger.debug("snapshot fast path declined after an error", exc_info=True)
            return None
        return snapshot_response(body, if_none_match, accept_encoding)


@router.get(
    "/users",
    summary="Teammates, a page at a time",
    responses={200: {"model": UserPage}, **_PAGE_ERRORS},
)
async def list_users(
    services: ServicesDep, limit: Limit = 100, cursor: Cursor = None, include_removed: bool = False
) -> Response:
    roles = services.settings.roles_supported
    return await _read(
        services,
        lambda s: views.users_page(
            s, cursor=cursor, limit=limit, include_removed=include_removed, roles_enabled=roles
        ),
    )


@router.get(
    "/users/{user_id}",
    summary="One teammate (a removed one has status deleted)",
    responses={200: {"model": User}, 404: {"model": ErrorBody}},
)
async def get_user(user_id: str, services: ServicesDep) -> Response:
    roles = services.settings.roles_supported
    return await _read(services, lambda s: views.user_view(s, user_id, roles_enabled=roles))


@router.get(
    "/teams",
    summary="Teams with their member ids, a page at a time",
    responses={200: {"model": TeamPage}, **_PAGE_ERRORS},
)
async def list_teams(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
    return await _read(services, lambda s: views.teams_page(s, cursor=cursor, limit=limit))


@router.get(
    "/teams/{team_id}",
    summary="One team",
    responses={200: {"model": Team}, 404: {"model": ErrorBody}},
)
async def get_team(team_id: str, services: ServicesDep) -> Response:
    return await _read(services, lambda s: views.team_view(s, team_id))


@router.get(
    "/teams/{team_id}/members",
    summary="A team's members, a page at a time",
    responses={200: {"model": MemberPage}, 404: {"model": ErrorBody}, **_PAGE_ERRORS},
)
async def list_team_members(
    team_id: str, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    return await _read(
        services, lambda s: views.team_members_page(s, team_id, cursor=cursor, limit=limit)
    )


@router.get(
    "/roles",
    summary="Roles (INTERCOM_API_VERSION 2.16+), a page at a time",
    responses={200: {"model": RolePage}, **_PAGE_ERRORS},
)
async def list_roles(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
    roles = services.settings.roles_supported
    return await _read(
        services, lambda s: views.roles_page(s, cursor=cursor, limit=limit, roles_enabled=roles)
    )


@router.get(
    "/roles/{role_id}",
    summary="One role",
    responses={200: {"model": Role}, 404: {"model": ErrorBody}},
)
async def get_role(role_id: str, services: ServicesDep) -> Response:
    roles = services.settings.roles_supported
    return await _read(services, lambda s: views.role_view(s, role_id, roles_enabled=roles))


@router.get(
    "/roles/{role_id}/members",
    summary="A role's holders, a page at a time",
    responses={200: {"model": MemberPage}, 404: {"model": ErrorBody}, **_PAGE_ERRORS},
)
async def list_role_members(
    role_id: str, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    roles = services.settings.roles_supported
    return await _read(
        services,
        lambda s: views.role_members_page(
            s, role_id, cursor=cursor, limit=limit, roles_enabled=roles
        ),
    )


@router.get(
    "/workspaces",
    summary="The workspace as a resource (a one-item listing)",
    responses={200: {"model": WorkspacePage}, **_PAGE_ERRORS},
)
async def list_workspaces(
    services: ServicesDep, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    return await _read(services, lambda s: views.workspaces_page(s, cursor=cursor, limit=limit))


@router.get(
    "/workspaces/{workspace_id}",
    summary="The workspace",
    responses={200: {"model": WorkspaceResource}, 404: {"model": ErrorBody}},
)
async def get_workspace(workspace_id: str, services: ServicesDep) -> Response:
    return await _read(services, lambda s: views.workspace_view(s, workspace_id))


@router.get(
    "/workspaces/{workspace_id}/members",
    summary="The workspace's members (every active teammate), a page at a time",
    responses={200: {"model": MemberPage}, 404: {"model": ErrorBody}, **_PAGE_ERRORS},
)
async def list_workspace_members(
    workspace_id: str, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    return await _read(
        services,
        lambda s: views.workspace_members_page(s, workspace_id, cursor=cursor, limit=limit),
    )


@router.get(
    "/grants",
    summary="Every grant, a page at a time",
    responses={200: {"model": GrantPage}, **_PAGE_ERRORS},
)
async def list_grants(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
    roles = services.settings.roles_supported
    return await _read(
        services, lambda s: views.grants_page(s, cursor=cursor, limit=limit, roles_enabled=roles)
    )


@router.get(
    "/changes",
    summary="Ordered changes after a version",
    responses={
        200: {"model": ChangeFeed},
        400: {"model": ErrorBody},
        410: {"model": ErrorBody, "description": "`since_too_old`: refetch."},
    },
)
async def list_changes(
    services: ServicesDep,
    since: Annotated[int, Query(ge=0, description="The version you hold.")],
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> Response:
    """Whole versions only; apply them in order, then continue from `next_since`."""
    return await _read(services, lambda s: views.change_feed(s, since=since, limit=limit))


__all__ = ["ApiError", "router"]
