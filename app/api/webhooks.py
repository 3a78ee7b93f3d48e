"""`POST /webhooks/intercom` and `HEAD /webhooks/intercom`.

What a delivery gets is decided by `app.webhooks.receive.take_delivery`. Deliveries that state
their length (Intercom's do) are taken by `WebhookFastPath` ahead of FastAPI's routing and
dependency machinery, which cost more than verifying and storing the delivery; the route below
takes the rest (chunked bodies) and documents the endpoint in /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import ServicesDep
from app.api.errors import error_response
from app.api.schemas import ErrorBody, WebhookAck
from app.intercom.signature import SIGNATURE_HEADER
from app.webhooks.receive import MAX_BODY_BYTES, Receipt, take_delivery

router = APIRouter(tags=["webhooks"])
WEBHOOK_PATH = "/webhooks/intercom"

_ACK: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookAck, "description": "Stored (or acknowledged)."}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Signed, but not a notification envelope."},
    401: {"model": ErrorBody, "description": "Missing or wrong X-Hub-Signature."},
    413: {"model": ErrorBody, "description": "Body over 1 MiB."},
    503: {"model": ErrorBody, "description": "INTERCOM_CLIENT_SECRET is not set."},
}


def receipt_response(receipt: Receipt) -> Response:
    if receipt.error_code is None:
        return Response(f'{{"status":"{receipt.outcome}"}}', media_type="application/json")
    return error_response(receipt.status, receipt.error_code, receipt.message or "")


async def read_body(receive: Receive, declared_length: str | None) -> bytes | None:
    """The request body, or None as soon as it is known to be over MAX_BODY_BYTES."""
    declared = int(declared_length) if declared_length and declared_length.isdigit() else 0
    if declared > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; what was read is all there is
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class WebhookFastPath:
    """Takes `POST /webhooks/intercom` with a Content-Length before routing, with the same
    answers as the route. It sits inside RequestIdMiddleware, so request ids and access lines
    are as for any request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH:
            services = getattr(getattr(scope.get("app"), "state", None), "services", None)
            headers = Headers(scope=scope)
            declared = headers.get("content-length")
            if services is not None and declared is not None:
                body = await read_body(receive, declared)
                receipt = await take_delivery(services, body, headers.getlist(SIGNATURE_HEADER))
                await receipt_response(receipt)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
async def receive_webhook(request: Request, services: ServicesDep) -> Response:
    """Verify the signature over the raw body, store the notification, answer at once."""
    body = await read_body(request.receive, request.headers.get("content-length"))
    receipt = await take_delivery(services, body, request.headers.getlist(SIGNATURE_HEADER))
    return receipt_response(receipt)
