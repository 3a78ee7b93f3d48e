"""Usage evidence under `/api/v1` (read token): access events and dormant seats."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.activity import views
from app.api.c1 import require_reader
from app.api.deps import ServicesDep
from app.api.schemas import ErrorBody


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Actor(_Doc):
    id: str | None
    email: str | None
    ip: str | None


class AccessEvent(_Doc):
    id: str
    type: str
    at: str
    actor: Actor
    user_id: str | None
    description: str | None
    metadata: dict[str, Any] | None


class AccessEventPage(_Doc):
    items: list[AccessEvent]
    next_cursor: str | None
    version: int


class NamedRef(_Doc):
    id: str
    name: str | None


class DormantTeammate(_Doc):
    id: str
    name: str | None
    email: str | None
    account_type: str
    has_inbox_seat: bool
    role: NamedRef | None
    teams: list[NamedRef]
    last_login_at: str | None
    last_login_method: str | None


class DormantReport(_Doc):
    days: int
    as_of: str
    activity_log_read_to: str | None
    version: int
    items: list[DormantTeammate]


router = APIRouter(
    prefix="/api/v1",
    tags=["c1"],
    dependencies=[Depends(require_reader)],
    responses={
        401: {"model": ErrorBody, "description": "Missing or unknown read token."},
        503: {"model": ErrorBody, "description": "No baseline has succeeded yet (`not_synced`)."},
    },
)


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


@router.get(
    "/access-events",
    summary="Access events from Intercom's activity log, oldest first, a page at a time",
    responses={
        200: {"model": AccessEventPage},
        400: {"model": ErrorBody, "description": "Bad filter, `limit` or `invalid_cursor`."},
    },
)
async def list_access_events(
    services: ServicesDep,
    since: Annotated[
        str | None,
        Query(description="Only events at or after this time (ISO 8601 or Unix seconds)."),
    ] = None,
    type: Annotated[
        list[str] | None,
        Query(description="Only these activity types (repeat the parameter for several)."),
    ] = None,
    user_id: Annotated[str | None, Query(description="Only events about this teammate.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000.")] = 100,
    cursor: Annotated[str | None, Query(description="Opaque cursor from `next_cursor`.")] = None,
) -> Response:
    """Sign-in failures, two-factor and SSO changes, permission, role, seat and team changes,
    invitations, joining, deletion, SCIM, impersonation, exports, app installs and token
    changes, kept `ACCESS_EVENT_RETENTION_DAYS`. Pages are keyset pages on (`at`, `id`): new
    events never shift a page already read."""

    def run() -> dict[str, Any]:
        with services.db.reading() as session:
            return views.access_events_page(
                session,
                since=since,
                types=type or [],
                user_id=user_id,
                cursor=cursor,
                limit=limit,
            )

    return _json(await run_in_threadpool(run))


@router.get(
    "/reports/dormant",
    summary="Active teammates with no sign-in within `days` (JSON, or CSV with Accept: text/csv)",
    responses={
        200: {
            "model": DormantReport,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Oldest sign-in first; never seen signing in comes first of all.",
        },
        400: {"model": ErrorBody},
    },
)
async def dormant_report(
    request: Request,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=3650, description="Days without a sign-in.")] = 90,
) -> Response:
    """Who holds access (and which seat, role and teams) but has not signed in within `days`,
    by the sign-ins read from the activity log and the `admin.logged_in` webhooks. 503
    `activity_log_not_read` until the log has been read once."""
    roles = services.settings.roles_supported

    def run() -> dict[str, Any]:
        with services.db.reading() as session:
            return views.dormant_report(session, days=days, roles_enabled=roles)

    report = await run_in_threadpool(run)
    if "text/csv" in request.headers.get("accept", "").lower():
        return Response(
            views.dormant_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="dormant-{days}d.csv"'},
        )
    return _json(report)
