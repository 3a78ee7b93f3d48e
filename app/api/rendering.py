"""The JSON of the cold routes (`/healthz`, `/readyz`, `/sync-runs`, `/resync`,
`/webhook-events`), rendered here and nowhere else: the store's and health's records become
the `app/api/schemas.py` models that the OpenAPI document describes, validated, then written
with orjson. A record that does not fit the shape the document promises fails here (a 500)
instead of reaching a client.

The snapshot, the pages and the webhook answer keep their hand-rendered orjson: they are hot,
and their speed was measured."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from app.api import schemas
from app.core.timefmt import iso, iso_microseconds
from app.health.readiness import Readiness
from app.store.models import WebhookEvent
from app.store.sync_runs import RunView

HEALTHY = schemas.Health(status="ok")


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # exclude_unset: an optional member the record does not have (a run error's `details`) is
    # left out rather than sent as null; every other member is always set.
    body = orjson.dumps(model.model_dump(mode="json", exclude_unset=True))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def readiness(state: Readiness) -> schemas.Readiness:
    if not state.ready:
        status = "unavailable"
    else:
        status = "degraded" if state.problems else "ok"
    return schemas.Readiness.model_validate(
        {
            "status": status,
            "version": state.version,
            "last_sync_at": iso(state.last_sync_at),
            "last_webhook_at": iso(state.last_webhook_at),
            "inbox_backlog": state.inbox_backlog,
            "problems": state.problems,
            "activity_log_read_to": iso(state.activity_log_read_to),
        }
    )


def sync_run(run: RunView) -> schemas.SyncRun:
    error: dict[str, Any] | None = None
    if run.error_code:
        error = {"code": run.error_code, "message": run.error_message or ""}
        if run.error_details:
            error["details"] = run.error_details
    return schemas.SyncRun.model_validate(
        {
            "id": run.id,
            "trigger": run.trigger,
            "status": run.status,
            "started_at": iso_microseconds(run.started_at),
            "finished_at": iso_microseconds(run.finished_at),
            "stats": run.stats,
            "error": error,
            "warnings": run.warnings,
        }
    )


def sync_runs(runs: list[RunView]) -> schemas.SyncRunList:
    return schemas.SyncRunList(items=[sync_run(run) for run in runs])


def webhook_event(event: WebhookEvent) -> schemas.WebhookEventView:
    created = event.notification_created_at
    return schemas.WebhookEventView.model_validate(
        {
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
    )


def webhook_events(events: list[WebhookEvent]) -> schemas.WebhookEventList:
    return schemas.WebhookEventList(items=[webhook_event(event) for event in events])


def _from_unix(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
