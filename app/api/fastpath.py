"""The C1 poll fast path: `GET /api/v1/snapshot` answered ahead of FastAPI's routing and
dependency machinery, which cost several times the answer itself when the answer is a 304 or
cached bytes.

It takes only requests that can only succeed: no query string, a valid read token, a synced
store. It answers them with the route's own `snapshot_response`, so headers and bodies are the
same. Anything else (no or wrong token, `?include_removed=`, not synced yet, a store error)
goes on to the normal route unchanged, which produces the usual answer or error. It sits inside
RequestIdMiddleware, so request ids and access lines are as for any request.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import bearer_token, token_matches
from app.api.c1 import snapshot_response
from app.snapshot.cache import NotSynced

logger = logging.getLogger(__name__)
SNAPSHOT_PATH = "/api/v1/snapshot"


class SnapshotFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == SNAPSHOT_PATH
            and not scope.get("query_string")
        ):
            response = await self._answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        if services is None:
            return None
        # One pass over the raw headers for the three that matter, each taken at its first
        # occurrence as starlette.datastructures.Headers.get does (names arrive lower-cased).
        authorization = if_none_match = accept_encoding = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if if_none_match is None:
                    if_none_match = value.decode("latin-1")
            elif name == b"accept-encoding" and accept_encoding is None:
                accept_encoding = value.decode("latin-1")
        token = bearer_token(authorization)
        allowed = services.settings.read_api_tokens
        if token is None or not allowed or not token_matches(token, allowed):
            return None
        try:
            body = await services.snapshots.get(include_removed=False)
        except NotSynced:
            return None
        except Exception:
            # The route will meet the same problem and answer it the usual way.
            logger.debug("snapshot fast path declined after an error", exc_info=True)
            return None
        return snapshot_response(body, if_none_match, accept_encoding)
