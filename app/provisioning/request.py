"""What a provisioning request is and how it can end: the request the route parsed, the outcome
of one that ran, a refusal, and the answer the route sends. Every step of a request
(app/provisioning/service.py, removal.py, team_members.py) speaks in these terms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.store import provisioning as records

REMOVE_USER = "remove_user"
ADD_TEAM_MEMBER = "add_team_member"
REMOVE_TEAM_MEMBER = "remove_team_member"

# Stores a change Intercom confirmed, together with the request's record (one transaction).
StoreChange = Callable[[records.FinishFn], Awaitable[records.RequestRecord]]


@dataclass(frozen=True)
class Request:
    """What the route parsed: who asks, for what, under which key."""

    action: str
    user_id: str
    team_id: str | None
    dry_run: bool
    token: str
    request_hash: str
    idempotency_key: str | None
    reassign_to: str | None = None


class Refusal(Exception):
    """A request answered without a change: status, our error code, a message, and what was
    called at Intercom (method, path, body, status) if anything."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        intercom: records.IntercomCall | None = None,
        headers: dict[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.intercom = intercom
        self.headers = headers or {}
        self.transient = transient


@dataclass(frozen=True)
class Outcome:
    """A finished request: the result, our status, and the Intercom call made, if any."""

    result: str
    status: int
    intercom: records.IntercomCall | None
    store: StoreChange | None = None


@dataclass(frozen=True)
class Answer:
    """What the route sends: the request's record, or an error (code, message) when there is
    no record to show (a refusal before the request was recorded, and every 400). The route
    renders either as JSON."""

    status: int
    record: records.RequestRecord | None = None
    error: tuple[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
