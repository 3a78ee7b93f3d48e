"""Scripted misbehaviour of the simulated API: what a fault is, and the wrong-shaped bodies it
can put in place of a real answer.

Tests queue faults (``SimWorkspace.add_fault`` or ``POST /_sim/faults``); the gateway
(``gateway``) takes one per matching request and answers as the fault says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# "wrong_shape" is valid JSON that is not what the path answers (`/me` without `app`, `/admins`
# without `admins`, `/teams` with `teams` not a list, an object path answered with a list);
# "non_object_items" is a list answer with entries that are not objects among the real ones.
FAULT_BODIES = frozenset(
    {"truncated", "not_json", "empty_admins", "wrong_shape", "non_object_items"}
)


@dataclass
class Fault:
    """A scripted misbehaviour for the next ``times`` API requests matching ``path``.

    ``status`` None with ``delay_seconds`` > 0 means: answer normally, only late. ``body`` replaces
    the answer (one of ``FAULT_BODIES``) and is sent with ``status`` or 200.
    """

    path: str
    status: int | None = None
    times: int = 1
    delay_seconds: float = 0.0
    reset_in_seconds: float = 1.0
    body: str | None = None
    error_code: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.path != "*" and not self.path.startswith("/"):
            raise ValueError("fault path must be '*' or start with '/'")
        if self.path.startswith("/_sim"):
            raise ValueError("faults apply to API paths, not the /_sim control plane")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("fault status must be an HTTP status code")
        if self.times < 1:
            raise ValueError("fault times must be >= 1")
        if self.delay_seconds < 0 or self.reset_in_seconds < 0:
            raise ValueError("fault delays must be >= 0")
        if self.body is not None and self.body not in FAULT_BODIES:
            raise ValueError(f"fault body must be one of {sorted(FAULT_BODIES)}")

    def matches(self, path: str) -> bool:
        """Whether this fault applies to a request for ``path``."""
        return self.path in ("*", path)

    def to_dict(self) -> dict[str, Any]:
        """The control-plane JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Parse control-plane JSON, rejecting unknown keys so typos do not silently no-op."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ValueError(str(exc)) from exc


def wrong_shape(path: str, payload: Any) -> Any:
    """Valid JSON that is not the shape `path` answers with."""
    if path == "/me" and isinstance(payload, dict):
        return {key: value for key, value in payload.items() if key != "app"}
    if path == "/admins":
        return {"type": "admin.list"}
    if path == "/teams":
        return {"type": "team.list", "teams": {"type": "team", "id": "1"}}
    return [payload]


def with_non_object_items(payload: Any) -> Any:
    """A list answer with entries that are not objects added to its real ones."""
    if not isinstance(payload, dict):
        return payload
    answer = dict(payload)
    for key in ("admins", "teams"):
        if isinstance(answer.get(key), list):
            answer[key] = [*answer[key], "oops", 42, None]
    return answer
