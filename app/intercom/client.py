"""A thin async client for the Intercom REST endpoints the syncer reads.

Errors form a small tree, so callers decide on kinds rather than status codes::

    IntercomError                 any failure talking to Intercom (has .code, .status)
    ├── IntercomAuthError         401/403 or a token_* code: terminal, never retried
    │   └── IntercomPlanRestricted  403 api_plan_restricted: the plan lacks API access
    ├── IntercomNotFound          404 for a by-id lookup
    ├── IntercomConflict          409 on a write (provisioning: re-read and try again)
    ├── IntercomRateLimited       429 (retried until X-RateLimit-Reset, bounded)
    ├── IntercomUnavailable       5xx, timeouts, connection errors (retried with backoff)
    ├── IntercomBadResponse       a body that is not the JSON shape expected (retried)
    └── IntercomConfigError       our configuration cannot work: a header value HTTP cannot
                                  carry, an API version Intercom does not know (never retried)

Messages never contain the access token: every message passes the log redactor (the HTTP
stack's own error text can quote a header), and header errors are described, not quoted.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
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
from app.intercom.text import loads_json
from app.observability.logs import Redactor, scrub
from app.observability.metrics import INTERCOM_REQUESTS
from app.settings import Settings

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
    # The `errors[0].code` of Intercom's answer, when it sent one (set by the write calls).
    intercom_code: str | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        message = scrub(message)
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


class IntercomConflict(IntercomError):
    """409 on a write: declined before anything was written, or partly applied."""

    code = "intercom_conflict"


class IntercomRateLimited(IntercomError):
    code = "intercom_rate_limited"

    def __init__(self, message: str, *, status: int | None = 429, reset_at: float | None = None):
        super().__init__(message, status=status)
        self.reset_at = reset_at


class IntercomUnavailable(IntercomError):
    code = "intercom_unavailable"


class IntercomBadResponse(IntercomError):
    code = "intercom_bad_response"


class IntercomConfigError(IntercomError):
    """A configured value Intercom (or HTTP) cannot take; the message names the variable."""

    code = "config_invalid"


HEADER_VARIABLES = {
    "Authorization": "INTERCOM_ACCESS_TOKEN",
    "Intercom-Version": "INTERCOM_API_VERSION",
}


_RETRYABLE = (IntercomRateLimited, IntercomUnavailable, IntercomBadResponse)
T = TypeVar("T")
ModelT = TypeVar("ModelT", IntercomAdmin, IntercomTeam)


def _parse_workspace(body: Any) -> IntercomWorkspace:
    app = body.get("app") if isinstance(body, dict) else None
    if not isinstance(app, dict):
        raise IntercomBadResponse("GET /me answered JSON without an 'app' object")
    try:
        return IntercomWorkspace.model_validate(app)
    except ValidationError as exc:
        raise IntercomBadResponse(
            f"GET /me returned no usable 'app' object: {_first_error(exc)}"
        ) from None


def _parse_list(body: Any, key: str, kind: str, model: type[ModelT]) -> list[ModelT]:
    """The `kind` objects of a list answer. The list itself must be sound (an object with a
    list under `key`, every entry an object): anything else is a wrong answer, not a
    workspace without teammates. One entry that is no usable teammate or team (no id) is
    skipped with a warning, so that it does not hide the others."""
    try:
        items = parse_items(body, key, kind)
    except ValueError as exc:
        raise IntercomBadResponse(f"GET /{key} answered JSON of the wrong shape: {exc}") from None
    parsed = []
    for item in items:
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as exc:
            logger.warning("skipping unparseable %s from Intercom: %s", kind, exc.errors()[0])
    return parsed


def _parse_one(body: Any, model: type[ModelT], what: str, kind: str) -> ModelT:
    if not isinstance(body, dict):
        raise IntercomBadResponse(f"{what} answered JSON that is not an object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise IntercomBadResponse(f"{what} returned a bad {kind}: {_first_error(exc)}") from None


def _any_json(body: Any) -> Any:
    """For reads whose caller checks the shape itself (the activity log)."""
    return body


def _first_error(exc: ValidationError) -> str:
    """Where and what, without the offending value (it is Intercom's data, not ours to log)."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


@dataclass(frozen=True)
class WriteAnswer:
    """What Intercom answered a write with (2xx only: anything else raises)."""

    status: int
    body: Any


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


def _header_problem(header: str) -> str:
    variable = HEADER_VARIABLES.get(header, header)
    return (
        f"{variable} holds a character that cannot travel in the {header} header "
        "(a line break, a control or a non-ASCII character); set it again without it"
    )


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
        self._api_version = api_version
        # Settings already refuse such values; a client built another way still never puts
        # the token into an error message.
        self._redactor = Redactor([access_token])
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json",
            "Intercom-Version": api_version,
            "User-Agent": "intercom-sync/0.1",
        }
        for name, value in headers.items():
            if not all(" " <= char <= "~" for char in value):
                raise IntercomConfigError(_header_problem(name))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
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
        return await self._get_json("/me", endpoint="me", parse=_parse_workspace)

    async def list_admins(self) -> list[IntercomAdmin]:
        return await self._get_json(
            "/admins",
            endpoint="admins",
            parse=lambda body: _parse_list(body, "admins", "admin", IntercomAdmin),
        )

    async def list_teams(self) -> list[IntercomTeam]:
        return await self._get_json(
            "/teams",
            endpoint="teams",
            parse=lambda body: _parse_list(body, "teams", "team", IntercomTeam),
        )

    async def get_admin(self, admin_id: str) -> IntercomAdmin:
        return await self._get_json(
            f"/admins/{admin_id}",
            endpoint="admin",
            parse=lambda body: _parse_one(body, IntercomAdmin, "GET /admins/{id}", "admin"),
        )

    async def get_team(self, team_id: str) -> IntercomTeam:
        return await self._get_json(
            f"/teams/{team_id}",
            endpoint="team",
            parse=lambda body: _parse_one(body, IntercomTeam, "GET /teams/{id}", "team"),
        )

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
        return await self._get_json(
            path, endpoint=endpoint, parse=_any_json, params=params, json_body=json_body
        )

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

    def _say_retry(self, path: str, state: RetryCallState) -> None:
        """One warning per retry or rate-limit wait, with the wait as a field
        (`intercom-sync sync` prints these as they come: a wait is otherwise silence)."""
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        reason = (
            exc.message if isinstance(exc, IntercomError) else f"GET {path}: {type(exc).__name__}"
        )
        waiting = (
            "waiting %.1f s for the rate limit to reset"
            if isinstance(exc, IntercomRateLimited)
            else "retrying in %.1f s"
        )
        logger.warning(
            "Intercom: %s; " + waiting + " (attempt %d of %d)",
            reason,
            wait,
            state.attempt_number + 1,
            self._retry.max_attempts,
            extra={"intercom_path": path, "retry_in_seconds": round(wait, 3)},
        )

    async def _get_json(
        self,
        path: str,
        *,
        endpoint: str,
        parse: Callable[[Any], T],
        params: dict[str, str | int] | None = None,
        json_body: Any = None,
    ) -> T:
        """GET `path` (or POST `json_body` to it: Intercom's search endpoints) and `parse` its
        JSON body. A body of the wrong shape (`parse` raises IntercomBadResponse) is retried
        like one that is not JSON at all: both are what a proxy or a bad deploy answers for a
        moment."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(self._retry.max_attempts),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda state: self._say_retry(path, state),
        )
        async for attempt in retrying:
            with attempt:
                return parse(
                    await self._get_once(
                        path, endpoint=endpoint, params=params, json_body=json_body
                    )
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe(self, exc: BaseException) -> str:
        return self._redactor.scrub(f"{type(exc).__name__}: {exc}")

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
        except httpx.LocalProtocolError:
            # h11 refused to write the request: a header value it cannot carry. Its text
            # quotes the value (the token), and no retry can change it.
            INTERCOM_REQUESTS.labels(endpoint, "config_invalid").inc()
            raise IntercomConfigError(
                f"{method} {path}: the request could not be written: a header value holds a "
                "character HTTP does not allow; check INTERCOM_ACCESS_TOKEN and "
                "INTERCOM_API_VERSION for spaces, line breaks or other control characters"
            ) from None
        except httpx.TimeoutException as exc:
            INTERCOM_REQUESTS.labels(endpoint, "timeout").inc()
            raise IntercomUnavailable(
                f"{method} {path}: timed out waiting for {self._host} ({type(exc).__name__})"
            ) from None
        except httpx.ConnectError as exc:
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: could not connect to {self._host} ({self._describe(exc)})"
            ) from None
        except httpx.TransportError as exc:
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: connection to {self._host} failed ({self._describe(exc)})"
            ) from None
        except (OSError, AttributeError) as exc:
            # A connection reset while httpcore sets it up can escape unwrapped (anyio asks
            # the already-closed socket for its peer: AttributeError). It is still only a
            # connection failure, to be retried like one rather than failing the run outright.
            INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
            raise IntercomUnavailable(
                f"{method} {path}: connection to {self._host} lost ({self._describe(exc)})"
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
            if code == "intercom_version_invalid":
                raise IntercomConfigError(
                    f"Intercom does not know API version {self._api_version!r} ({status} "
                    f"intercom_version_invalid on GET {path}): set INTERCOM_API_VERSION to a "
                    "version Intercom offers, such as 2.14 or 2.16, or Preview",
                    status=status,
                )
            if code in AUTH_ERROR_CODES:
                raise IntercomAuthError(
                    f"Intercom refused the access token ({status} {code}) on {method} {path}: "
                    "check INTERCOM_ACCESS_TOKEN",
                    status=status,
                )
            raise IntercomError(f"{method} {path} answered {status} ({code})", status=status)
        try:
            return loads_json(response.content)
        except orjson.JSONDecodeError:
            raise IntercomBadResponse(
                f"{method} {path} answered {status} with a body that is not JSON", status=status
            ) from None


# -- writes (provisioning, spec §10) ------------------------------------------------------------
# Additive to the reads above: a write names its own `Intercom-Version` (the endpoints exist
# only in some versions, whatever the reads use) and retries 429/5xx within a time budget
# rather than a number of waits, because someone (C1) is waiting for the answer.


async def _write_once(
    client: IntercomClient,
    method: str,
    path: str,
    *,
    endpoint: str,
    api_version: str,
    params: dict[str, str] | None = None,
    json_body: Any = None,
) -> WriteAnswer:
    label = f"{method} {path}"
    try:
        response = await client._http.request(
            method,
            path,
            params=params,
            content=orjson.dumps(json_body) if json_body is not None else None,
            headers={
                "Intercom-Version": api_version,
                **({"Content-Type": "application/json"} if json_body is not None else {}),
            },
        )
    except httpx.TimeoutException as exc:
        INTERCOM_REQUESTS.labels(endpoint, "timeout").inc()
        raise IntercomUnavailable(
            f"{label}: timed out waiting for {client._host} ({type(exc).__name__})"
        ) from None
    except (httpx.TransportError, OSError, AttributeError) as exc:
        INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
        raise IntercomUnavailable(
            f"{label}: connection to {client._host} failed ({type(exc).__name__})"
        ) from None
    status = response.status_code
    INTERCOM_REQUESTS.labels(endpoint, str(status)).inc()
    code = _error_code(response)
    error: IntercomError | None = None
    if status == 429:
        error = IntercomRateLimited(f"{label} was rate limited", reset_at=_reset_at(response))
    elif status in (401, 403) or (400 <= status < 500 and code in AUTH_ERROR_CODES):
        code = code or ("unauthorized" if status == 401 else "forbidden")
        kind = IntercomPlanRestricted if code == "api_plan_restricted" else IntercomAuthError
        error = kind(f"Intercom refused {label} ({status} {code})", status=status)
    elif status == 404:
        error = IntercomNotFound(f"{label}: not found ({code or 'not_found'})", status=status)
    elif status == 409:
        error = IntercomConflict(f"{label}: conflict ({code or 'conflict'})", status=status)
    elif status >= 500:
        error = IntercomUnavailable(f"{label} answered {status}", status=status)
    elif status >= 400:
        error = IntercomError(f"{label} answered {status} ({code or 'error'})", status=status)
    if error is not None:
        error.intercom_code = code
        raise error
    if not response.content:
        return WriteAnswer(status, None)
    try:
        return WriteAnswer(status, loads_json(response.content))
    except orjson.JSONDecodeError:
        raise IntercomBadResponse(
            f"{label} answered {status} with a body that is not JSON", status=status
        ) from None


async def intercom_write(
    client: IntercomClient,
    method: str,
    path: str,
    *,
    endpoint: str,
    api_version: str,
    budget_seconds: float,
    params: dict[str, str] | None = None,
    json_body: Any = None,
) -> WriteAnswer:
    """One write, retried on 429, 5xx, timeouts and bodies that are not JSON for at most
    `budget_seconds` (and the client's attempt limit); a wait that would end past the budget
    is not started. The last error is raised; an IntercomRateLimited keeps its `reset_at`."""
    deadline = time.monotonic() + budget_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _write_once(
                client,
                method,
                path,
                endpoint=endpoint,
                api_version=api_version,
                params=params,
                json_body=json_body,
            )
        except _RETRYABLE as exc:
            if attempt >= client._retry.max_attempts:
                raise
            if isinstance(exc, IntercomRateLimited) and exc.reset_at is not None:
                wait = max(0.0, exc.reset_at - time.time()) + 0.05
            else:
                initial = client._retry.backoff_initial_seconds
                wait = min(initial * 2 ** (attempt - 1), client._retry.backoff_max_seconds)
            if time.monotonic() + wait > deadline:
                raise
            logger.warning(
                "Intercom %s %s failed (%s), retrying (attempt %d)", method, path, exc, attempt
            )
            await asyncio.sleep(wait)


async def me_admin_id(client: IntercomClient) -> str:
    """The id of the teammate the access token acts as (`GET /me`'s own `id`)."""
    return await client._get_json("/me", endpoint="me", parse=_parse_me_admin_id)


def _parse_me_admin_id(body: Any) -> str:
    admin_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(admin_id, bool) or not isinstance(admin_id, (str, int)) or admin_id == "":
        raise IntercomBadResponse("GET /me returned no teammate id")
    return str(admin_id)


def intercom_client_factory(settings: Settings) -> Callable[[], IntercomClient] | None:
    token = settings.intercom_access_token
    if token is None:
        return None
    tls: list[ssl.SSLContext] = []  # built on first use, then shared by every run's client

    def make() -> IntercomClient:
        if not tls:
            tls.append(httpx.create_ssl_context())
        return IntercomClient(
            base_url=settings.intercom_api_base_url,
            access_token=token.get_secret_value(),
            api_version=settings.intercom_api_version,
            timeout_seconds=settings.intercom_timeout_seconds,
            retry=RetryPolicy(
                max_attempts=settings.intercom_max_attempts,
                backoff_initial_seconds=settings.intercom_backoff_initial_seconds,
                max_rate_limit_wait_seconds=settings.intercom_max_rate_limit_wait_seconds,
            ),
            tls=tls[0],
        )

    return make
