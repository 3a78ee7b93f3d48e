"""`POST /webhooks/intercom` and `HEAD /webhooks/intercom` (spec §3.1).

The handler verifies, stores durably and answers; it never calls Intercom and never applies
inline. No path here answers 410, which would make Intercom disable the subscription.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.errors import ApiError
from app.api.schemas import ErrorBody, WebhookAck
from app.intercom.notifications import (
    HANDLED_TOPICS,
    PING_TOPIC,
    InvalidNotification,
    parse_notification,
)
from app.intercom.signature import SIGNATURE_HEADER, signature_is_valid
from app.metrics import WEBHOOKS
from app.services import Services, get_services
from app.store import inbox
from app.store.inbox import NewEvent
from app.store.models import utcnow

logger = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

MAX_BODY_BYTES = 1024 * 1024
_ACK: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookAck, "description": "Stored (or acknowledged)."}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Signed, but not a notification envelope."},
    401: {"model": ErrorBody, "description": "Missing or wrong X-Hub-Signature."},
    413: {"model": ErrorBody, "description": "Body over 1 MiB."},
    503: {"model": ErrorBody, "description": "INTERCOM_CLIENT_SECRET is not set."},
}


def _ack(status: str) -> Response:
    WEBHOOKS.labels(status).inc()
    return Response(f'{{"status":"{status}"}}', media_type="application/json")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "webhook bodies are limited to 1 MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", "webhook bodies are limited to 1 MiB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.head(
    "/webhooks/intercom",
    summary="Intercom's URL validation",
    # No body: documenting the default JSON response would promise a content type it lacks.
    response_class=Response,
    responses={200: {"description": "The endpoint exists."}},
)
async def webhook_head() -> Response:
    """Intercom checks the endpoint with a HEAD request when the URL is saved."""
    return Response(status_code=200)


@router.post(
    "/webhooks/intercom",
    summary="Receive a signed Intercom notification",
    responses={**_ACK, **_ERRORS},
)
async def receive_webhook(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Response:
    """Verify the signature over the raw body, store the notification, answer at once."""
    secret = services.settings.intercom_client_secret
    if secret is None:
        WEBHOOKS.labels("unconfigured").inc()
        raise ApiError(
            503,
            "webhook_secret_not_configured",
            "INTERCOM_CLIENT_SECRET is not set, so signatures cannot be verified",
        )
    try:
        body = await _read_body(request)
    except ApiError:
        WEBHOOKS.labels("too_large").inc()
        raise
    if not signature_is_valid(
        body, request.headers.get(SIGNATURE_HEADER), secret.get_secret_value()
    ):
        WEBHOOKS.labels("unauthorized").inc()
        raise ApiError(
            401, "invalid_signature", "X-Hub-Signature is missing or does not match the body"
        )
    received_at = utcnow()
    try:
        notification = parse_notification(body)
    except InvalidNotification as exc:
        await services.inbox_writer.store(
            NewEvent(
                notification_id=None,
                topic=None,
                app_id=None,
                item_id=None,
                notification_created_at=None,
                received_at=received_at,
                status=inbox.REJECTED,
                raw_body=body,
                error=str(exc),
            )
        )
        WEBHOOKS.labels("rejected").inc()
        logger.warning("rejected a signed webhook: %s", exc)
        raise ApiError(
            400, "invalid_notification", f"not an Intercom notification: {exc}"
        ) from None
    if notification.topic == PING_TOPIC:
        return _ack("ignored")
    status = inbox.PENDING
    reason = None
    expected = services.known_workspace_id()
    if expected is None:
        expected = await run_in_threadpool(services.expected_workspace_id)
    if notification.topic not in HANDLED_TOPICS:
        status, reason = inbox.IGNORED, f"topic {notification.topic} is not handled"
    elif expected and notification.app_id and notification.app_id != expected:
        status, reason = inbox.IGNORED, f"notification for workspace {notification.app_id}"
    if reason:
        logger.info("ignoring webhook %s: %s", notification.id, reason)
    stored = await services.inbox_writer.store(
        NewEvent(
            notification_id=notification.id,
            topic=notification.topic,
            app_id=notification.app_id,
            item_id=notification.item_id,
            notification_created_at=notification.created_at,
            received_at=received_at,
            status=status,
            raw_body=body,
            error=reason,
        )
    )
    if not stored:
        return _ack("duplicate")
    return _ack("accepted" if status == inbox.PENDING else "ignored")
