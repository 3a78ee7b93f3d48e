"""How provisioning reaches Intercom: a client per request (or a refusal when no token is
configured), the token's own teammate (learned from `GET /me` once per process), and
Intercom's failures turned into our answers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from app.intercom.client import IntercomClient, me_admin_id
from app.intercom.errors import (
    IntercomAuthError,
    IntercomError,
    IntercomPlanRestricted,
    IntercomRateLimited,
    IntercomUnavailable,
)
from app.provisioning.request import Refusal

# How long a write keeps retrying 429/5xx before it answers 503 (C1 is waiting).
WRITE_BUDGET_SECONDS = 30.0


class IntercomCalls:
    """One per process: makes the clients and remembers the token's own teammate."""

    def __init__(self, client_factory: Callable[[], IntercomClient] | None) -> None:
        self._client_factory = client_factory
        self._own_admin_id: str | None = None
        self._own_lock = asyncio.Lock()

    def client(self) -> IntercomClient:
        if self._client_factory is None:
            raise Refusal(
                503,
                "intercom_not_configured",
                "INTERCOM_ACCESS_TOKEN is not set: the service cannot call Intercom",
            )
        return self._client_factory()

    async def own_teammate(self) -> str:
        """The teammate the access token acts as (a dry run before any other request makes
        this one read)."""
        if self._own_admin_id is not None:
            return self._own_admin_id
        async with self._own_lock:
            if self._own_admin_id is None:
                client = self.client()
                try:
                    self._own_admin_id = await me_admin_id(client)
                except IntercomError as exc:
                    raise refusal_for(exc, "GET", "/me", None, removal=False) from None
                finally:
                    await client.aclose()
            return self._own_admin_id


def _retry_after(exc: IntercomError) -> str:
    if isinstance(exc, IntercomRateLimited) and exc.reset_at is not None:
        return str(max(1, math.ceil(exc.reset_at - time.time())))
    return str(int(WRITE_BUDGET_SECONDS))


def refusal_for(
    exc: IntercomError, method: str, path: str, body: dict[str, Any] | None, *, removal: bool
) -> Refusal:
    """Intercom's failure as our answer: 401/403 → 502 `intercom_refused` naming
    what is missing; 429/5xx (after the retry budget) → 503 `intercom_unavailable`."""
    call = (method, path, body, exc.status)
    short = path.split("?", 1)[0]
    code = exc.intercom_code or ("unauthorized" if exc.status == 401 else "forbidden")
    if isinstance(exc, IntercomPlanRestricted):
        if method == "PUT":
            what = (
                "Preview team writes (PUT /teams/{id}, under Intercom's managed availability) "
                "are not enabled for this workspace; ask Intercom to enable them"
            )
        else:
            what = "the workspace's Intercom plan does not include this API"
        message = f"Intercom answered {exc.status} {code} to {method} {short}: {what}"
        return Refusal(502, "intercom_refused", message, intercom=call)
    if isinstance(exc, IntercomAuthError):
        if exc.status == 401 or code.startswith("token_") or code == "unauthorized":
            what = "it refused the access token; check INTERCOM_ACCESS_TOKEN"
        elif removal:
            what = (
                "the app's access token lacks the remove_admins scope (Developer Hub > "
                "your app > Authentication: the permission to remove teammates)"
            )
        elif method == "PUT":
            what = "the teammate who authorized the app lacks the permission to manage teams"
        else:
            what = "the app's access token lacks the permission to read teammates and teams"
        message = f"Intercom answered {exc.status} {code} to {method} {short}: {what}"
        return Refusal(502, "intercom_refused", message, intercom=call)
    if isinstance(exc, IntercomRateLimited | IntercomUnavailable) or exc.code in (
        "intercom_bad_response",
    ):
        return Refusal(
            503,
            "intercom_unavailable",
            f"Intercom did not answer {method} {short} within {int(WRITE_BUDGET_SECONDS)} s of "
            f"retries ({exc.status or 'no status'}); nothing was changed, try again",
            intercom=call,
            headers={"Retry-After": _retry_after(exc)},
            transient=True,
        )
    return Refusal(
        502,
        "intercom_error",
        f"Intercom answered {exc.status} ({exc.intercom_code or 'error'}) to {method} {short}; "
        "nothing was changed",
        intercom=call,
    )
