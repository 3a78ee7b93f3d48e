"""A thin async client for the Intercom REST endpoints the syncer reads.

Errors form a small tree, so callers decide on kinds rather than status codes::

    IntercomError                 any failure talking to Intercom (has .code, .status)
    ├── IntercomAuthError         401/403 or a token_* code: terminal, never retried
    │   └── IntercomPlanRestricted  403 api_plan_restricted: the plan lacks API access
    ├── IntercomNotFound          404 for a by-id lookup
    ├── IntercomRateLimited       429 (retried until X-RateLimit-Reset, bounded)
    ├── IntercomUnavailable       5xx, timeouts, connection errors (retried with backoff)
    └── IntercomBadResponse       a body that is not the JSON shape expected (retried)

Messages never contain the access token: the Authorization header is only set on the client
and nothing here formats request headers.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.intercom.models import (
    IntercomAdmin,
    IntercomTeam,
    IntercomWorkspace,
    parse_items,
)
from app.metrics import INTERCOM_REQUESTS

logger = logging.getLogger(__name__)

AUTH_ERROR_CODES = frozenset(
    {
        "unauthorized",
        "forbidden",
        "missing_authorization",
        "token_revoked",
        "token_blocked",
        "token_not_found",
        "token_unauthorized",
        "token_expired",
    }
)


class IntercomError(Exception):
    code = "intercom_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class IntercomAuthError(IntercomError):
    code = "intercom_auth_failed"


class IntercomPlanRestricted(IntercomAuthError):
    """403 `api_plan_restricted`: the token is fine, the workspace's plan lacks the API."""

    code = "intercom_plan_restricted"


class IntercomNotFound(IntercomError):
    code = "intercom_not_found"


class IntercomRateLimited(IntercomError):
    code = "intercom_rate_limited"

    def __init__(self, message: str, *, status: int | None = 429, reset_at: float | None = None):
        super().__init__(message, status=status)
        self.reset_at = reset_at


class IntercomUnavailable(IntercomError):
    code = "intercom_unavailable"


class IntercomBadResponse(IntercomError):
    code = "intercom_bad_response"


_RETRYABLE = (IntercomRateLimited, IntercomUnavailable, IntercomBadResponse)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_initial_seconds: float = 0.8
    backoff_max_seconds: float = 30.0
    max_rate_limit_wait_seconds: float = 60.0


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            return str(code) if code is not None else None
    return None


def _reset_at(response: httpx.Response) -> float | None:
    raw = response.headers.get("X-RateLimit-Reset")
    if raw is None:
        retry_after = response.headers.get("Retry-After")
        if retry_after is not None:
            try:
                return time.time() + float(retry_after)
            except ValueError:
                return None
        return None
    try:
        return float(raw)
    except ValueError:
        return None


class IntercomClient:
    """Reads `/me`, `/admins`, `/teams` and their by-id forms, with retries per spec §4."""

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        api_version: str,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._host = urlsplit(base_url).hostname or base_url
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json",
                "Intercom-Version": api_version,
                "User-Agent": "intercom-sync/0.1",
            },
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            transport=transport,
            # Building a context loads the CA bundle, tens of milliseconds of CPU: callers
            # that make a client per run pass one context built once.
            verify=tls if tls is not None else True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> IntercomClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def get_workspace(self) -> IntercomWorkspace:
        """The workspace (`app`) of the token, from `GET /me`."""
        body = await self._get_json("/me", endpoint="me")
        app = body.get("app") if isinstance(body, dict) else None
        try:
            return IntercomWorkspace.model_validate(app)
        except ValidationError as exc:
            raise IntercomBadResponse(f"GET /me returned no usable 'app' object: {exc}") from None

    async def list_admins(self) -> list[IntercomAdmin]:
        body = await self._get_json("/admins", endpoint="admins")
        return self._parse_list(body, "admins", "admin", IntercomAdmin)

    async def list_teams(self) -> list[IntercomTeam]:
        body = await self._get_json("/teams", endpoint="teams")
        return self._parse_list(body, "teams", "team", IntercomTeam)

    async def get_admin(self, admin_id: str) -> IntercomAdmin:
        body = await self._get_json(f"/admins/{admin_id}", endpoint="admin")
        try:
            return IntercomAdmin.model_validate(body)
        except ValidationError as exc:
            raise IntercomBadResponse(f"GET /admins/{{id}} returned a bad admin: {exc}") from None

    async def get_team(self, team_id: str) -> IntercomTeam:
        body = await self._get_json(f"/teams/{team_id}", endpoint="team")
        try:
            return IntercomTeam.model_validate(body)
        except ValidationError as exc:
            raise IntercomBadResponse(f"GET /teams/{{id}} returned a bad team: {exc}") from None

    async def request_json(
        self,
        path: str,
        *,
        endpoint: str,
        params: dict[str, str | int] | None = None,
        json_body: Any = None,
    ) -> Any:
        """Any other JSON read, with the same retries and error tree: a GET with ``params``,
        or a POST of ``json_body`` (Intercom's search endpoints)."""
        return await self._get_json(path, endpoint=endpoint, params=params, json_body=json_body)

    @staticmethod
    def _parse_list(body: Any, key: str, kind: str, model: Any) -> list[Any]:
        try:
            items = parse_items(body, key, kind)
        except ValueError as exc:
            raise IntercomBadResponse(f"GET /{key}: {exc}") from None
        parsed = []
        for item in items:
            try:
                parsed.append(model.model_validate(item))
            except ValidationError as exc:
                # One unusable entry (no id) must not hide the others, but it is worth a line.
                logger.warning("skipping unparseable %s from Intercom: %s", kind, exc.errors()[0])
        return parsed

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, IntercomRateLimited) and exc.reset_at is not None:
            wait = max(0.0, exc.reset_at - time.time()) + 0.05
            return min(wait, self._retry.max_rate_limit_wait_seconds)
        # Jitter scales with the initial backoff (tenacity's default is a flat 0-1 s, which would
        # swamp a short configured backoff); `multiplier` is tenacity's name for the initial wait.
        initial = self._retry.backoff_initial_seconds
        backoff = wait_exponential_jitter(
            multiplier=initial, max=self._retry.backoff_max_seconds, jitter=initial
        )
        return float(backoff(state))

    async def _get_json(
        self,
        path: str,
        *,
        endpoint: str,
        params: dict[str, str | int] | None = None,
        json_body: Any = None,
    ) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(self._retry.max_attempts),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda state: logger.warning(
                "Intercom %s %s failed (%s), retrying (attempt %d)",
                "GET" if json_body is None else "POST",
                path,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(
                    path, endpoint=endpoint, params=params, json_body=json_body
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(
        self,
        path: str,
        *,
        endpoint: str,
        params: dict[str, str | int] | None = None,
        json_body: Any = None,
    ) -> Any:
        method = "GET" if json_body is None else "POST"
        try:
            response = await self._http.request(method, path, params=params, json=json_body)
        except httpx.TimeoutException as exc:
            INTERCOM_REQUESTS.labels(endpoint, "timeout").inc()
            raise IntercomUnavailable(
                f"{method} {path}: timed out waiting for {self._host} ({type(exc).__name__})"
            ) from None
        except httpx.ConnectError as exc:
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: could not connect to {self._host} ({type(exc).__name__}: {exc})"
            ) from None
        except httpx.TransportError as exc:
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: connection to {self._host} failed ({type(exc).__name__}: {exc})"
            ) from None
        except (OSError, AttributeError) as exc:
            # A connection reset while httpcore sets it up can escape unwrapped (anyio asks
            # the already-closed socket for its peer: AttributeError). It is still only a
            # connection failure, to be retried like one rather than failing the run outright.
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: connection to {self._host} lost ({type(exc).__name__}: {exc})"
            ) from None
        status = response.status_code
        INTERCOM_REQUESTS.labels(endpoint, str(status)).inc()
        if status == 429:
            raise IntercomRateLimited(
                f"{method} {path} was rate limited", reset_at=_reset_at(response)
            )
        if status in (401, 403):
            code = _error_code(response) or ("unauthorized" if status == 401 else "forbidden")
            if code == "api_plan_restricted":
                raise IntercomPlanRestricted(
                    f"Intercom answered 403 api_plan_restricted on {method} {path}: the "
                    "workspace's Intercom plan does not include API access to this endpoint; "
                    "check the plan and the app's permissions in the Developer Hub",
                    status=status,
                )
            raise IntercomAuthError(
                f"Intercom refused the access token ({status} {code}) on {method} {path}: "
                "check INTERCOM_ACCESS_TOKEN and the app's permissions",
                status=status,
            )
        if status == 404:
            raise IntercomNotFound(f"{method} {path}: not found", status=status)
        if status >= 500:
            raise IntercomUnavailable(f"{method} {path} answered {status}", status=status)
        if status >= 400:
            code = _error_code(response) or "error"
            if code in AUTH_ERROR_CODES:
                raise IntercomAuthError(
                    f"Intercom refused the access token ({status} {code}) on {method} {path}: "
                    "check INTERCOM_ACCESS_TOKEN",
                    status=status,
                )
            raise IntercomError(f"{method} {path} answered {status} ({code})", status=status)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise IntercomBadResponse(
                f"{method} {path} answered {status} with a body that is not JSON", status=status
            ) from None
