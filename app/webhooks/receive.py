"""Stage 1, receiving one webhook delivery: verify the signature over the raw
bytes, store the notification durably through the inbox writer, and say what to answer. It
never calls Intercom and never applies inline, and no answer it gives is a 410, which would make
Intercom disable the subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from app.intercom.notifications import (
    HANDLED_TOPICS,
    PING_TOPIC,
    InvalidNotification,
    parse_notification,
)
from app.intercom.signature import SignatureRefused, check_signature
from app.observability.metrics import WEBHOOKS
from app.settings import Settings
from app.store.inbox import InboxStatus, NewEvent
from app.store.models import utcnow
from app.webhooks.apply_notification import future_reason
from app.webhooks.inbox_writer import InboxWriter

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    """What to answer: 200 with `outcome` as the status, or an error."""

    status: int
    # accepted | duplicate | ignored | rejected | unauthorized | too_large | unconfigured
    outcome: str
    error_code: str | None = None
    message: str | None = None


class Receiving(Protocol):
    """What taking a delivery needs of the process (app.services.Services is one): handed in,
    since the composition layer sits above the engines."""

    @property
    def settings(self) -> Settings: ...

    @property
    def inbox_writer(self) -> InboxWriter: ...

    def known_workspace_id(self) -> str | None: ...

    def expected_workspace_id(self) -> str | None: ...


async def take_delivery(
    services: Receiving, body: bytes | None, signatures: Sequence[str]
) -> Receipt:
    """`body` is None when it was over MAX_BODY_BYTES (and so not read to the end);
    `signatures` holds every X-Hub-Signature value the request carried."""
    receipt = await _take(services, body, signatures)
    WEBHOOKS.labels(receipt.outcome).inc()
    return receipt


async def _take(services: Receiving, body: bytes | None, signatures: Sequence[str]) -> Receipt:
    secret = services.settings.intercom_client_secret
    if secret is None:
        return Receipt(
            503,
            "unconfigured",
            "webhook_secret_not_configured",
            "INTERCOM_CLIENT_SECRET is not set, so signatures cannot be verified",
        )
    if body is None:
        return Receipt(413, "too_large", "payload_too_large", "webhook bodies are limited to 1 MiB")
    try:
        check_signature(body, signatures, secret.get_secret_value())
    except SignatureRefused as exc:
        # Anyone can send this: one info line, never the header's value.
        logger.info("refused a webhook delivery: %s", exc)
        return Receipt(401, "unauthorized", "invalid_signature", str(exc))
    received_at = utcnow()
    try:
        notification = parse_notification(body)
    except InvalidNotification as exc:
        # Kept, so that an operator can see what Intercom (or someone with the secret) sent.
        await services.inbox_writer.store(
            NewEvent(
                notification_id=None,
                topic=None,
                app_id=None,
                item_id=None,
                notification_created_at=None,
                received_at=received_at,
                status=InboxStatus.REJECTED,
                raw_body=body,
                error=str(exc),
            )
        )
        logger.warning("rejected a signed webhook: %s", exc)
        return Receipt(
            400, "rejected", "invalid_notification", f"not an Intercom notification: {exc}"
        )
    if notification.topic == PING_TOPIC:
        return Receipt(200, "ignored")
    status = InboxStatus.PENDING
    reason = None
    expected = services.known_workspace_id()
    if expected is None:
        expected = await run_in_threadpool(services.expected_workspace_id)
    if notification.topic not in HANDLED_TOPICS:
        status, reason = InboxStatus.IGNORED, f"topic {notification.topic} is not handled"
    elif expected and notification.app_id and notification.app_id != expected:
        status, reason = InboxStatus.IGNORED, f"notification for workspace {notification.app_id}"
    elif (future := future_reason(notification.created_at, received_at)) is not None:
        # Kept for an operator to see, applied to nothing; answered 200 all the same, since
        # Intercom's one retry would bring the same time again (stored once, a duplicate).
        status, reason = InboxStatus.REJECTED, future
    if reason:
        logger.info("ignoring webhook %s: %s", notification.id, reason)
    stored = await services.inbox_writer.store(
        NewEvent.of(notification, body, received_at=received_at, status=status, error=reason)
    )
    if not stored:
        return Receipt(200, "duplicate")
    return Receipt(200, "accepted" if status == InboxStatus.PENDING else "ignored")
