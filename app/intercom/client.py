"""A thin async client for the Intercom REST endpoints the service reads: `/me`, `/admins`,
`/teams`, a team by id, and any other JSON read (the activity log), with their retries.

What can fail is the tree in app/intercom/errors.py; how long to wait between attempts is in
app/intercom/retries.py; the provisioning writes are in app/intercom/writes.py, through
`IntercomClient.send`. Messages never contain the access token: every message passes the log
redactor (the HTTP stack's own error text can quote a header), and header errors are
described, not quoted.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
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
)

from app.intercom.errors import (
    RETRYABLE,
    IntercomBadResponse,
    IntercomConfigError,
    IntercomError,
    IntercomRateLimited,
    IntercomUnavailable,
    read_error,
)
from app.intercom.models import (
    IntercomAdmin,
    IntercomTeam,
    IntercomWorkspace,
    parse_items,
)
from app.intercom.retries import RetryPolicy, read_wait
from app.intercom.text import loads_json
from app.observability.logs import Redactor
from app.observability.metrics import INTERCOM_REQUESTS
from app.settings import Settings

logger = logging.getLogger(__name__)

HEADER_VARIABLES = {
    "Authorization": "INTERCOM_ACCESS_TOKEN",
    "Intercom-Version": "INTERCOM_API_VERSION",
}


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


def _header_problem(header: str) -> str:
    variable = HEADER_VARIABLES.get(header, header)
    return (
        f"{variable} holds a character that cannot travel in the {header} header "
        "(a line break, a control or a non-ASCII character); set it again without it"
    )


class IntercomClient:
    """Reads `/me`, `/admins`, `/teams` and a team by id, with retries."""

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

    @property
    def host(self) -> str:
        """Intercom's host, for messages."""
        return self._host

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request with the client's headers (`headers` add to them or replace them), as
        sent: no retry, no error mapping. For the writes (app/intercom/writes.py), which map
        and retry on their own terms."""
        return await self._http.request(
            method, path, params=params, content=content, headers=headers
        )

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
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(self._retry.max_attempts),
            wait=lambda state: read_wait(self._retry, state),
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
        error = read_error(response, method, path, api_version=self._api_version)
        if error is not None:
            raise error
        try:
            return loads_json(response.content)
        except orjson.JSONDecodeError:
            raise IntercomBadResponse(
                f"{method} {path} answered {status} with a body that is not JSON", status=status
            ) from None


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
