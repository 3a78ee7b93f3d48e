"""Operator endpoints: `/resync`, `/sync-runs`, `/webhook-events` (operator token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.auth import require_token
from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.api.schemas import ErrorBody, SyncRun, SyncRunList, WebhookEventList
from app.core.timefmt import iso
from app.store import inbox, sync_runs
from app.store.models import WebhookEvent

MAX_RUN_ID = 2**31 - 1


async def require_operator(request: Request, services: ServicesDep) -> None:
    require_token(
        request,
        services.settings.operator_api_tokens,
        kind="operator",
        variable="OPERATOR_API_TOKENS",
    )


router = APIRouter(
    tags=["operators"],
    dependencies=[Depends(require_operator)],
    responses={401: {"model": ErrorBody, "description": "Missing or unknown token."}},
)


MAX_RUN_ID = 2**31 - 1


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


@router.post(
    "/resync",
    status_code=202,
    summary="Start a baseline now (single-flight)",
    responses={202: {"model": SyncRun}},
)
async def resync(
    services: ServicesDep,
    force: Annotated[bool, Query(description="Pass the mass-removal brake.")] = False,
) -> Response:
    """Queue a baseline, or return the one already queued or running."""
    run, _created = await services.coordinator.request_run(
        sync_runs.RunTrigger.OPERATOR, force=force
    )
    return _json(run.as_json(), 202, {"Location": f"/sync-runs/{run.id}"})


@router.get("/sync-runs", summary="Recent sync runs", responses={200: {"model": SyncRunList}})
async def list_sync_runs(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> Response:
    def read() -> list[sync_runs.RunView]:
        with services.db.reading() as session:
            return sync_runs.list_runs(session, limit=limit)

    runs = await run_in_threadpool(read)
    return _json({"items": [run.as_json() for run in runs]})


@router.get(
    "/sync-runs/{run_id}",
    summary="One sync run",
    responses={200: {"model": SyncRun}, 404: {"model": ErrorBody}},
)
async def get_sync_run(run_id: int, services: ServicesDep) -> Response:
    if not 0 < run_id <= MAX_RUN_ID:
        # Beyond the column's range no run can exist (PostgreSQL would refuse the query).
        raise ApiError(404, "not_found", f"there is no sync run {run_id}")

    def read() -> sync_runs.RunView | None:
        with services.db.reading() as session:
            return sync_runs.get_run(session, run_id)

    # Run ids are positive 32-bit keys; PostgreSQL refuses to compare with anything larger.
    run = await run_in_threadpool(read) if 0 < run_id <= MAX_RUN_ID else None
    if run is None:
        raise ApiError(404, "not_found", f"there is no sync run {run_id}")
    return _json(run.as_json())


def _event_json(event: WebhookEvent) -> dict[str, object]:
    created = event.notification_created_at
    return {
        "id": event.notification_id,
        "inbox_id": event.id,
        "topic": event.topic,
        "app_id": event.app_id,
        "teammate_id": event.item_id,
        "created_at": iso(_from_unix(created)) if created is not None else None,
        "received_at": iso(event.received_at),
        "applied_at": iso(event.applied_at),
        "outcome": event.status,
        "deliveries": event.deliveries,
        "attempts": event.attempts,
        "error": event.error,
    }


def _from_unix(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@router.get(
    "/webhook-events",
    summary="Recent webhook deliveries and their outcome",
    responses={200: {"model": WebhookEventList}, 400: {"model": ErrorBody}},
)
async def list_webhook_events(
    services: ServicesDep,
    status: Annotated[
        str | None, Query(description="pending, applied, ignored, duplicate, rejected or failed")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """Recent inbox events; `status=duplicate` lists those delivered more than once."""
    if status is not None and status not in inbox.OUTCOMES:
        raise ApiError(400, "invalid_request", f"status must be one of {', '.join(inbox.OUTCOMES)}")

    def read() -> list[dict[str, object]]:
        with services.db.reading() as session:
            return [_event_json(e) for e in inbox.list_events(session, status=status, limit=limit)]

    return _json({"items": await run_in_threadpool(read)})
