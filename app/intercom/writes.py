"""Writes to Intercom (provisioning), additive to the client's reads: a write names
its own `Intercom-Version` (the endpoints exist only in some versions, whatever the reads use)
and retries 429/5xx within a time budget rather than a number of waits, because someone (C1)
is waiting for the answer. It also keeps Intercom's own error code (`intercom_code`), which the
answer to C1 names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from app.intercom.client import IntercomClient
from app.intercom.errors import (
    AUTH_ERROR_CODES,
    RETRYABLE,
    IntercomAuthError,
    IntercomBadResponse,
    IntercomConflict,
    IntercomError,
    IntercomNotFound,
    IntercomPlanRestricted,
    IntercomRateLimited,
    IntercomUnavailable,
    error_code_of,
    rate_limit_reset_at,
)
from app.intercom.retries import write_wait
from app.intercom.text import loads_json
from app.observability.metrics import INTERCOM_REQUESTS

# The client's logger: every retry warning of an Intercom call comes from one logger, which
# the CLI prints and the log's readers filter on.
logger = logging.getLogger("app.intercom.client")


@dataclass(frozen=True)
class WriteAnswer:
    """What Intercom answered a write with (2xx only: anything else raises)."""

    status: int
    body: Any


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
        response = await client.send(
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
            f"{label}: timed out waiting for {client.host} ({type(exc).__name__})"
        ) from None
    except (httpx.TransportError, OSError, AttributeError) as exc:
        INTERCOM_REQUESTS.labels(endpoint, "connection_error").inc()
        raise IntercomUnavailable(
            f"{label}: connection to {client.host} failed ({type(exc).__name__})"
        ) from None
    status = response.status_code
    INTERCOM_REQUESTS.labels(endpoint, str(status)).inc()
    code = error_code_of(response)
    error: IntercomError | None = None
    if status == 429:
        error = IntercomRateLimited(
            f"{label} was rate limited", reset_at=rate_limit_reset_at(response)
        )
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
        except RETRYABLE as exc:
            if attempt >= client.retry_policy.max_attempts:
                raise
            wait = write_wait(client.retry_policy, exc, attempt)
            if time.monotonic() + wait > deadline:
                raise
            logger.warning(
                "Intercom %s %s failed (%s), retrying (attempt %d)", method, path, exc, attempt
            )
            await asyncio.sleep(wait)
