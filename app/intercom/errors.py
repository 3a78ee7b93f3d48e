"""What can go wrong talking to Intercom, as a small tree, so callers decide on kinds rather
than status codes::

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

The reads (app/intercom/client.py) and the writes (app/intercom/writes.py) raise the same
kinds, so one module holds them. Messages never contain the access token: every message passes
the log redactor (the HTTP stack's own error text can quote a header), and header errors are
described, not quoted.
"""

from __future__ import annotations

import time

import httpx
import orjson

from app.observability.logs import scrub

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


# Worth another attempt: what a busy, restarting or misrouted Intercom answers for a moment.
RETRYABLE = (IntercomRateLimited, IntercomUnavailable, IntercomBadResponse)


def error_code_of(response: httpx.Response) -> str | None:
    """The `errors[0].code` of an error answer, if its body names one."""
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


def rate_limit_reset_at(response: httpx.Response) -> float | None:
    """When a 429 says the limit resets (epoch seconds): `X-RateLimit-Reset`, else
    `Retry-After` from now, else unknown."""
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


def read_error(
    response: httpx.Response, method: str, path: str, *, api_version: str
) -> IntercomError | None:
    """The error a read's answer is, or None for a 2xx/3xx (its body is parsed by the caller).
    A 400 that names an unknown API version is our configuration, never retried."""
    status = response.status_code
    if status == 429:
        return IntercomRateLimited(
            f"{method} {path} was rate limited", reset_at=rate_limit_reset_at(response)
        )
    if status in (401, 403):
        code = error_code_of(response) or ("unauthorized" if status == 401 else "forbidden")
        if code == "api_plan_restricted":
            return IntercomPlanRestricted(
                f"Intercom answered 403 api_plan_restricted on {method} {path}: the "
                "workspace's Intercom plan does not include API access to this endpoint; "
                "check the plan and the app's permissions in the Developer Hub",
                status=status,
            )
        return IntercomAuthError(
            f"Intercom refused the access token ({status} {code}) on {method} {path}: "
            "check INTERCOM_ACCESS_TOKEN and the app's permissions",
            status=status,
        )
    if status == 404:
        return IntercomNotFound(f"{method} {path}: not found", status=status)
    if status >= 500:
        return IntercomUnavailable(f"{method} {path} answered {status}", status=status)
    if status >= 400:
        code = error_code_of(response) or "error"
        if code == "intercom_version_invalid":
            return IntercomConfigError(
                f"Intercom does not know API version {api_version!r} ({status} "
                f"intercom_version_invalid on GET {path}): set INTERCOM_API_VERSION to a "
                "version Intercom offers, such as 2.14 or 2.16, or Preview",
                status=status,
            )
        if code in AUTH_ERROR_CODES:
            return IntercomAuthError(
                f"Intercom refused the access token ({status} {code}) on {method} {path}: "
                "check INTERCOM_ACCESS_TOKEN",
                status=status,
            )
        return IntercomError(f"{method} {path} answered {status} ({code})", status=status)
    return None
