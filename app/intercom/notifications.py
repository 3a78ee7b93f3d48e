"""Intercom's webhook notification envelope, validated after the signature check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.intercom.activity_types import activity_changes_access
from app.intercom.models import IntercomAdmin
from app.intercom.text import loads_json, storable_text

ADMIN_STATE_TOPICS = frozenset(
    {
        "admin.added_to_workspace",
        "admin.removed_from_workspace",
        "admin.away_mode_updated",
        "admin.logged_in",
        "admin.logged_out",
    }
)
ACTIVITY_LOG_TOPIC = "admin.activity_log_event.created"
PING_TOPIC = "ping"
HANDLED_TOPICS = ADMIN_STATE_TOPICS | {ACTIVITY_LOG_TOPIC}


class InvalidNotification(ValueError):
    """The body is signed but is not a usable notification envelope."""


@dataclass(frozen=True)
class Notification:
    id: str | None
    topic: str
    app_id: str | None
    created_at: int | None
    item: dict[str, Any]
    item_id: str | None
    # The teammate `item` describes, for the admin state topics (validated once, here).
    teammate: IntercomAdmin | None = None


# The latest Unix time a datetime can hold (9999-12-31T23:59:59Z); it also fits a BIGINT.
_MAX_TIMESTAMP = 253_402_300_799


def as_timestamp(value: object) -> int | None:
    """A Unix time in seconds, or None when the value is not one (an integer past 64 bits
    would not even fit the inbox column, and one past year 9999 is no date at all)."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 0 <= number <= _MAX_TIMESTAMP:
        return None
    return number


def parse_notification(body: bytes) -> Notification:
    """Parse and check the envelope; raises InvalidNotification with a human reason."""
    try:
        payload = loads_json(body)
    except orjson.JSONDecodeError:
        raise InvalidNotification("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidNotification("the body is not a JSON object")
    kind = payload.get("type")
    if kind is not None and kind != "notification_event":
        raise InvalidNotification(f"type is {kind!r}, not 'notification_event'")
    topic = payload.get("topic")
    if isinstance(topic, str):
        topic = storable_text(topic)  # kept in the inbox, and echoed in its reasons
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidNotification("the notification has no topic")
    # Trimmed before anything looks at it: " admin.logged_in" is still a sign-in.
    topic = topic.strip()
    raw_id = payload.get("id")
    if isinstance(raw_id, str):
        raw_id = storable_text(raw_id)
    notification_id: str | None
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        if topic != PING_TOPIC:
            raise InvalidNotification("the notification has no id")
        notification_id = None
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
        notification_id = str(raw_id).strip()
    else:
        raise InvalidNotification("the notification id is not a string")
    if len(notification_id or "") > 255:
        raise InvalidNotification("the notification id is longer than 255 characters")
    app_id = payload.get("app_id")
    if app_id is not None and not isinstance(app_id, str | int):
        raise InvalidNotification("app_id is not a string")
    if isinstance(app_id, str):
        app_id = storable_text(app_id)
    # The inbox columns' limits: longer values cannot be stored (PostgreSQL enforces them).
    if len(topic) > 255:
        raise InvalidNotification("the topic is longer than 255 characters")
    if app_id is not None and len(str(app_id)) > 128:
        raise InvalidNotification("app_id is longer than 128 characters")
    data = payload.get("data")
    item: dict[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("item"), dict):
        item = data["item"]
    elif topic in HANDLED_TOPICS:
        raise InvalidNotification("the notification has no data.item object")
    created_at = as_timestamp(payload.get("created_at"))
    if created_at is None:
        created_at = as_timestamp(payload.get("first_sent_at"))
    item_id: str | None = None
    teammate: IntercomAdmin | None = None
    if topic in ADMIN_STATE_TOPICS:
        try:
            teammate = IntercomAdmin.model_validate(item)
        except ValueError:
            raise InvalidNotification(
                f"data.item of {topic} is not a teammate with an id"
            ) from None
        item_id = teammate.id
        if len(item_id) > 64:
            raise InvalidNotification("the teammate id is longer than 64 characters")
    return Notification(
        id=notification_id,
        topic=topic,
        app_id=str(app_id) if app_id is not None else None,
        created_at=created_at,
        item=item,
        item_id=item_id,
        teammate=teammate,
    )


def activity_needs_refresh(item: dict[str, Any]) -> bool:
    """Whether an activity-log event can have changed who has access (team membership, seats,
    roles, permissions, joining, deletion, invitations, SCIM provisioning). Sign-ins, away
    mode, profile changes and types Intercom adds later do not."""
    return activity_changes_access(item.get("activity_type"))
