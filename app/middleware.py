"""A pure ASGI middleware (no per-request task overhead) that gives every request an id,
echoes it as `X-Request-ID`, and logs one access line with it."""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logging_setup import request_id_var

logger = logging.getLogger("app.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_QUIET_PATHS = frozenset({"/healthz", "/metrics"})


# The bits uuid.UUID(int=..., version=4) forces: the version nibble and the RFC 4122 variant.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def _new_request_id() -> str:
    # The hex of a UUID4 like uuid.uuid4(), from the process's PRNG instead of os.urandom: a
    # request id needs uniqueness, not secrecy, and the getrandom() call showed up in profiles
    # under load. Set the bits directly: building a UUID object cost more than the id.
    return "%032x" % ((random.getrandbits(128) & _UUID4_KEEP) | _UUID4_SET)


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
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            if path not in _QUIET_PATHS and logger.isEnabledFor(logging.INFO):
                _log_access(scope.get("method", "?"), path, status, started)
            request_id_var.reset(token)


def _log_access(method: str, path: str, status: int, started: float) -> None:
    """What `logger.info("%s %s %d", ...)` would log, through the same handlers and filters,
    without its search of the call stack for the caller's file and line (which no formatter
    here prints). This runs once per request, and was the largest cost of a 304."""
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        _ACCESS_LINE,
        "%s %s %d",
        (method, path, status),
        None,
        "_log_access",
        {"duration_ms": duration_ms},
    )
    logger.handle(record)


_ACCESS_LINE = _log_access.__code__.co_firstlineno
