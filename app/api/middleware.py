"""Pure ASGI middleware (no per-request task overhead): `RequestIdMiddleware` gives every
request an id, echoes it as `X-Request-ID`, and logs one access line with it;
`HeadAsGetMiddleware` answers `HEAD` wherever `GET` is served."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logs import request_id_var

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


class RouteMethods:
    """The methods each path of an app is served with, found from its routes (FastAPI's
    included routers do not state their methods, so Starlette's own 405 `Allow` was empty).
    Mounted apps, such as the docs' static files, answer for themselves and are left out."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = [
            (compile_path(context.path)[0], frozenset(context.methods))
            for context in iter_route_contexts(routes)
            if context.path and context.methods
        ]

    def declared(self, path: str) -> frozenset[str]:
        """The methods routes declare for `path`."""
        methods: frozenset[str] = frozenset()
        for pattern, route_methods in self._routes:
            if pattern.match(path):
                methods |= route_methods
        return methods

    def allowed(self, path: str) -> list[str]:
        """What a 405 names in `Allow`: the declared methods, with HEAD wherever GET is."""
        methods = set(self.declared(path))
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)


def route_methods(app: Any) -> RouteMethods:
    """The app's RouteMethods, built on first use (when every router has been included)."""
    found: RouteMethods | None = getattr(app.state, "route_methods", None)
    if found is None:
        found = RouteMethods(app.routes)
        app.state.route_methods = found
    return found


class HeadAsGetMiddleware:
    """Answers `HEAD` on a path served by `GET` (and not by a `HEAD` route of its own) as
    that `GET` would, headers and status alike, without the body. It sits outside the fast
    paths of the snapshot and the webhook, so they answer a HEAD as they answer a GET, and
    inside RequestIdMiddleware, whose access line names the HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        declared = route_methods(scope["app"]).declared(scope["path"])
        if "HEAD" in declared or "GET" not in declared:
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
