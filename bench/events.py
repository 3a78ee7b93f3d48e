"""Webhook deliveries for the benchmarks: the same bodies feed the HTTP load generator and the
in-process apply benchmark, so both measure the same mix of work."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from app.intercom.notifications import parse_notification
from app.intercom.signature import sign_body
from app.simulator import SimWorkspace
from app.simulator.webhooks import (
    DEFAULT_AVATAR_URL,
    USER_AGENT,
    build_notification,
    encode_notification,
    intercom_id,
)
from app.store.inbox import NewEvent

# The mix a busy workspace sends: sign-ins and away-mode flips dominate, with some profile
# updates (an "added" for a known teammate is an upsert). Every event is newer than the last one
# for its teammate, so each one is applied rather than skipped as stale.
TOPIC_CYCLE = (
    "admin.logged_in",
    "admin.away_mode_updated",
    "admin.logged_out",
    "admin.added_to_workspace",
)
# Marker teammates live far above the simulator's ids, so they never collide with it.
MARKER_ID_BASE = 5_000_000_000


def admin_sample(workspace: SimWorkspace, limit: int = 2000) -> list[dict[str, Any]]:
    """Plain dicts for up to `limit` human teammates (what the load generator process needs)."""
    with workspace.lock:
        admins = [a for a in workspace.admins.values() if not a.email.endswith("@intercom.io")]
    return [
        {
            "id": a.id,
            "name": a.name,
            "email": a.email,
            "job_title": a.job_title,
            "has_inbox_seat": a.has_inbox_seat,
            "team_ids": list(a.team_ids),
        }
        for a in admins[:limit]
    ]


def _item(admin: dict[str, Any], *, away: bool) -> dict[str, Any]:
    return {
        "type": "admin",
        "id": intercom_id(admin["id"]),
        "name": admin["name"],
        "email": admin["email"],
        "job_title": admin["job_title"],
        "away_mode_enabled": away,
        "away_mode_reassign": False,
        "away_status_reason": "",
        "has_inbox_seat": admin["has_inbox_seat"],
        "team_ids": [intercom_id(t) for t in admin["team_ids"]],
        "avatar": {"type": "avatar", "image_url": DEFAULT_AVATAR_URL},
    }


def delivery_body(
    index: int, admins: list[dict[str, Any]], *, app_id: str, tag: str, base_created_at: int
) -> bytes:
    """Delivery number `index` of a run: a unique notification id and a strictly newer
    `created_at` than the previous delivery, so nothing is deduplicated or skipped as stale."""
    admin = admins[index % len(admins)]
    topic = TOPIC_CYCLE[index % len(TOPIC_CYCLE)]
    away = (index // len(admins)) % 2 == 1
    envelope = build_notification(
        topic,
        _item(admin, away=away),
        app_id=app_id,
        created_at=base_created_at + index,
        notification_id=f"bench-{tag}-{index}",
    )
    return encode_notification(envelope)


def marker_body(marker: int, *, app_id: str, team_id: str | None) -> tuple[str, bytes]:
    """An `admin.added_to_workspace` for a teammate nobody has seen: (teammate id, body)."""
    admin_id = str(MARKER_ID_BASE + marker)
    admin = {
        "id": admin_id,
        "name": f"Marker {marker}",
        "email": f"marker{marker}@bench.example",
        "job_title": None,
        "has_inbox_seat": True,
        "team_ids": [team_id] if team_id else [],
    }
    envelope = build_notification(
        "admin.added_to_workspace",
        _item(admin, away=False),
        app_id=app_id,
        created_at=int(time.time()),
        notification_id=f"bench-marker-{marker}-{time.time_ns()}",
    )
    return admin_id, encode_notification(envelope)


def webhook_request(
    body: bytes, *, secret: str, host: str, path: str = "/webhooks/intercom"
) -> bytes:
    """The raw HTTP/1.1 request Intercom would send for `body`."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        f"X-Hub-Signature: {sign_body(body, secret)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def pending_events(bodies: Iterable[bytes]) -> list[NewEvent]:
    """Inbox rows as the intake would store them (for the apply benchmark)."""
    received = datetime.now(UTC)
    return [NewEvent.of(parse_notification(body), body, received_at=received) for body in bodies]
