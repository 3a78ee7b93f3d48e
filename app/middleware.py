"""A pure ASGI middleware (no per-request task overhead) that gives every request an id,
echoes it as `X-Request-ID`, and logs one access line with it."""

from __future__ import annotations

import logging
import random
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logging_setup import request_id_var

logger = logging.getLogger("app.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_QUIET_PATHS = frozenset({"/healthz", "/metrics"})


def _new_request_id() -> str:
    # A UUID4 like uuid.uuid4(), from the process's PRNG instead of os.urandom: a request id
    # needs uniqueness, not secrecy, and the getrandom() call showed up in profiles under load.
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else _new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            if path not in _QUIET_PATHS and logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s %d",
                    scope.get("method", "?"),
                    path,
                    status,
                    extra={"duration_ms": round((time.perf_counter() - started) * 1000, 2)},
                )
            request_id_var.reset(token)
