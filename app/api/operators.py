"""Operator endpoints: `/resync`, `/sync-runs`, `/webhook-events` (operator token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api import rendering
from app.api.auth import require_token
from app.api.deps import ServicesDep
from app.api.errors import ApiError
from app.api.rendering import json_response
from app.api.schemas import ErrorBody, SyncRun, SyncRunList, WebhookEventList
from app.store import inbox, sync_runs

# Run ids are positive 32-bit keys; PostgreSQL refuses to compare with anything larger.
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
    return json_response(rendering.sync_run(run), 202, {"Location": f"/sync-runs/{run.id}"})


@router.get("/sync-runs", summary="Recent sync runs", responses={200: {"model": SyncRunList}})
async def list_sync_runs(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> Response:
    def read() -> list[sync_runs.RunView]:
        with services.db.reading() as session:
            return sync_runs.list_runs(session, limit=limit)

    return json_response(rendering.sync_runs(await run_in_threadpool(read)))


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

    run = await run_in_threadpool(read)
    if run is None:
        raise ApiError(404, "not_found", f"there is no sync run {run_id}")
    return json_response(rendering.sync_run(run))


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

    def read() -> WebhookEventList:
        with services.db.reading() as session:
            return rendering.webhook_events(inbox.list_events(session, status=status, limit=limit))

    return json_response(await run_in_threadpool(read))
