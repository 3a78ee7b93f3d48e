"""`/healthz`, `/readyz` and `/metrics`: no token, and nothing secret in any of them."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api import rendering
from app.api.deps import ServicesDep
from app.api.rendering import json_response
from app.api.schemas import Health, Readiness
from app.health.readiness import check_readiness
from app.observability.metrics import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness", responses={200: {"model": Health}})
async def healthz() -> Response:
    return json_response(rendering.HEALTHY)


@router.get(
    "/readyz",
    summary="Readiness and known problems",
    responses={200: {"model": Readiness}, 503: {"model": Readiness}},
)
async def readyz(services: ServicesDep) -> Response:
    """200 once the store is reachable and a baseline has succeeded; 503 before."""
    readiness = await run_in_threadpool(check_readiness, services.db, services.settings)
    return json_response(rendering.readiness(readiness), 200 if readiness.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(services: ServicesDep) -> Response:
    store_part = await run_in_threadpool(generate_latest, services.metrics_registry)
    body = generate_latest(REGISTRY) + store_part
    return Response(body, media_type=CONTENT_TYPE_LATEST)
