"""Activity-log entries as the service keeps them, parsed from Intercom's JSON (the REST list
and the `admin.activity_log_event.created` webhook item have the same shape)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.intercom.notifications import as_timestamp

# Keys under which an entry's metadata may name the teammate it is about (undocumented:
# looked for, never required). Without one, the event is about the teammate who acted.
_SUBJECT_KEYS = ("admin_id", "teammate_id", "target_admin_id", "affected_admin_id")


@dataclass(frozen=True, slots=True)
class LogEntry:
    id: str
    at: datetime
    activity_type: str
    actor_id: str | None
    actor_email: str | None
    actor_ip: str | None
    description: str | None
    metadata: dict[str, Any] | None

    @property
    def sign_in_method(self) -> str | None:
        method = (self.metadata or {}).get("sign_in_method")
        return method[:64] if isinstance(method, str) and method else None

    @property
    def user_id(self) -> str | None:
        """The teammate the entry is about."""
        for key in _SUBJECT_KEYS:
            value = (self.metadata or {}).get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)[:64]
        return self.actor_id


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = "".join(ch for ch in str(value) if ch in "\t\n" or (ch >= " " and ch != "\x7f"))
    return text[:limit] or None


def _clean(value: Any) -> Any:
    """JSON as Intercom sent it, made storable: NUL and other control characters removed from
    strings (PostgreSQL refuses NUL in JSON), unpaired surrogates replaced."""
    if isinstance(value, str):
        text = "".join(ch for ch in value if ch in "\t\n" or (ch >= " " and ch != "\x7f"))
        return text.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def parse_entry(item: object) -> LogEntry | None:
    """One entry, or None when it has no usable id, type or time."""
    if not isinstance(item, dict):
        return None
    entry_id = _text(item.get("id"), 255)
    activity_type = item.get("activity_type")
    created_at = as_timestamp(item.get("created_at"))
    if entry_id is None or not isinstance(activity_type, str) or created_at is None:
        return None
    performed_by = item.get("performed_by")
    actor = performed_by if isinstance(performed_by, dict) else {}
    metadata = item.get("metadata")
    return LogEntry(
        id=entry_id,
        at=datetime.fromtimestamp(created_at, UTC),
        activity_type=activity_type.strip()[:128],
        actor_id=_text(actor.get("id"), 64),
        actor_email=_text(actor.get("email"), 512),
        actor_ip=_text(actor.get("ip"), 64),
        description=_text(item.get("activity_description"), 10_000),
        metadata=_clean(metadata) if isinstance(metadata, dict) else None,
    )
