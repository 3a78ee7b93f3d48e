"""Intercom webhook notifications as the simulator builds, signs and delivers them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import orjson

from app.intercom.signature import SIGNATURE_HEADER, sign_body
from app.simulator.records import SimAdmin
from app.simulator.state import SimWorkspace

USER_AGENT = "intercom-parrot-service-client/1.0"
DEFAULT_AVATAR_URL = "https://static.intercomassets.com/assets/default-avatars/admins/128.png"
PING_ITEM: dict[str, Any] = {"type": "ping", "message": "something something interzen"}
# Intercom gives a receiver 5 s before counting the delivery as failed.
DELIVERY_TIMEOUT_SECONDS = 5.0

_ACTIVITY_DESCRIPTIONS = {
    "app_team_creation": "{who} created a team.",
    "app_team_deletion": "{who} deleted a team.",
    "app_team_membership_modification": "{who} changed a team's membership.",
    "admin_deletion": "{who} removed a teammate.",
    "app_admin_join": "{who} joined the workspace.",
    "admin_permission_change": "{who} changed a teammate's permissions.",
    "role_change": "{who} changed a teammate's role.",
    "seat_change": "{who} changed a teammate's seat.",
}


def intercom_id(value: str) -> int | str:
    """``value`` as a JSON number when it is all digits, the way Intercom sends list ids."""
    return int(value) if value.isascii() and value.isdigit() else value


def build_notification(
    topic: str,
    item: dict[str, Any],
    *,
    app_id: str,
    created_at: int | None = None,
    notification_id: str | None = None,
) -> dict[str, Any]:
    """Intercom's ``notification_event`` envelope around ``item``."""
    created = int(time.time()) if created_at is None else created_at
    is_ping = topic == "ping"
    if is_ping:
        # A real ping carries no id and no delivery status (see the reference's ping fixture).
        item = item or dict(PING_ITEM)
    elif notification_id is None:
        notification_id = f"notif_{uuid.uuid4()}"
    return {
        "type": "notification_event",
        "app_id": app_id,
        "data": {"type": "notification_event_data", "item": item},
        "links": {},
        "id": notification_id,
        "topic": topic,
        "delivery_status": None if is_ping else "pending",
        "delivery_attempts": 1,
        "delivered_at": 0,
        "first_sent_at": created,
        "created_at": created,
        "self": None,
    }


def admin_webhook_item(admin: SimAdmin, *, numeric_id: bool = False) -> dict[str, Any]:
    """The admin as webhook payloads carry it, which differs from the REST object.

    The id is a string, as in Intercom's webhook model and its official SDK; `numeric_id`
    sends it as a number, as some captured deliveries do."""
    return {
        "type": "admin",
        "id": intercom_id(admin.id) if numeric_id else admin.id,
        "name": admin.name,
        "email": admin.email,
        "job_title": admin.job_title,
        "away_mode_enabled": admin.away_mode_enabled,
        "away_mode_reassign": admin.away_mode_reassign,
        "away_status_reason": "🍔 On lunch" if admin.away_mode_enabled else "",
        "has_inbox_seat": admin.has_inbox_seat,
        "team_ids": [intercom_id(t) for t in admin.team_ids],
        "avatar": {"type": "avatar", "image_url": admin.avatar_url or DEFAULT_AVATAR_URL},
    }


def activity_log_item(
    activity_type: str,
    *,
    performed_by_id: str,
    performed_by_email: str = "admin@acme.example",
    performed_by_name: str = "A teammate",
    metadata: dict[str, Any] | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """An ``admin_activity_log_event`` item for the ``admin.activity_log_event.created`` topic."""
    template = _ACTIVITY_DESCRIPTIONS.get(activity_type, "{who} performed " + activity_type + ".")
    return {
        "type": "admin_activity_log_event",
        "id": str(uuid.uuid4()),
        "performed_by": {
            "type": "admin",
            "id": performed_by_id,
            "email": performed_by_email,
            "ip": "192.0.2.1",
        },
        "metadata": metadata if metadata is not None else {},
        "created_at": int(time.time()) if created_at is None else created_at,
        "activity_type": activity_type,
        "activity_description": template.format(who=performed_by_name),
    }


def default_item(
    workspace: SimWorkspace,
    topic: str,
    *,
    admin_id: str | None = None,
    activity_type: str = "app_team_membership_modification",
) -> dict[str, Any]:
    """The item a ``topic`` notification would carry now; LookupError if the admin is unknown."""
    if topic == "ping":
        return dict(PING_ITEM)
    if topic == "admin.activity_log_event.created":
        by = workspace.get_admin(admin_id) if admin_id is not None else _first_admin(workspace)
        if by is None:
            raise LookupError(f"admin {admin_id} not found")
        return activity_log_item(
            activity_type,
            performed_by_id=by.id,
            performed_by_email=by.email,
            performed_by_name=by.name,
        )
    if admin_id is None:
        raise LookupError(f"topic {topic!r} needs 'item' or 'admin_id'")
    admin = workspace.get_admin(admin_id)
    if admin is None:
        raise LookupError(f"admin {admin_id} not found")
    item = admin_webhook_item(admin)
    if topic == "admin.removed_from_workspace":
        # The removal payload arrives with memberships already cleared.
        item["team_ids"] = []
    return item


def _first_admin(workspace: SimWorkspace) -> SimAdmin | None:
    with workspace.lock:
        first = next(iter(workspace.admins.values()), None)
        return first.copy() if first is not None else None


def dumps_json(payload: Any) -> bytes:
    """Compact JSON bytes. Text with an unpaired surrogate (which a test may give a teammate,
    as Intercom's JSON may carry one as an escape) is written as `\\uXXXX` escapes, which
    orjson refuses to write: only then the standard library writes it."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def loads_json(body: bytes) -> Any:
    """Parse JSON, taking unpaired surrogate escapes too (orjson refuses them)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except ValueError:
            pass
        raise


def encode_notification(envelope: dict[str, Any]) -> bytes:
    """Compact JSON bytes, the exact bytes that get signed and sent."""
    return dumps_json(envelope)


def webhook_headers(body: bytes, secret: str) -> dict[str, str]:
    """The headers Intercom sends with a notification, including the signature over ``body``."""
    return {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign_body(body, secret),
    }


def send_webhook(
    url: str, body: bytes, secret: str, *, client: httpx.Client | None = None
) -> httpx.Response:
    """POST a signed notification body to ``url`` and return the receiver's response."""
    headers = webhook_headers(body, secret)
    if client is not None:
        return client.post(url, content=body, headers=headers)
    with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS) as own:
        return own.post(url, content=body, headers=headers)


async def send_webhook_async(
    url: str,
    body: bytes,
    secret: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout_seconds: float = DELIVERY_TIMEOUT_SECONDS,
) -> httpx.Response:
    """``send_webhook`` for use inside the simulator's event loop."""
    headers = webhook_headers(body, secret)
    if client is not None:
        return await client.post(url, content=body, headers=headers, timeout=timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout_seconds) as own:
        return await own.post(url, content=body, headers=headers)
