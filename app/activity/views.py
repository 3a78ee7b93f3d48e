"""What `GET /api/v1/access-events` and `GET /api/v1/reports/dormant` answer."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.core.timefmt import iso
from app.intercom.activity_types import ACCESS_EVENT_TYPES
from app.store import activity as store
from app.store.cursors import decode_cursor, encode_cursor
from app.store.models import AccessEvent, utcnow
from app.store.read_errors import ActivityLogNotRead, InvalidCursor, InvalidRequest
from app.store.reads import require_synced
from app.store.versioning import read_header


def parse_since(value: str | None) -> datetime | None:
    """`since` as ISO 8601 (a zone or `Z`; none means UTC) or Unix seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest(
            "since must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) or Unix seconds",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _event_json(event: AccessEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "at": iso(event.at),
        "actor": {"id": event.actor_id, "email": event.actor_email, "ip": event.actor_ip},
        "user_id": event.user_id,
        "description": event.description,
        "metadata": event.event_metadata,
    }


def access_events_page(
    session: Session,
    *,
    since: str | None,
    types: list[str],
    user_id: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    header = read_header(session)
    require_synced(header)
    unknown = sorted(set(types) - ACCESS_EVENT_TYPES)
    if unknown:
        raise InvalidRequest(
            f"type {unknown[0]!r} is not an access event type; known: "
            + ", ".join(sorted(ACCESS_EVENT_TYPES)),
        )
    since_at = parse_since(since)
    # A cursor belongs to one set of filters: reused with others it would skip or repeat.
    listing = "access-events:" + "|".join(
        [since_at.isoformat() if since_at else "", ",".join(sorted(set(types))), user_id or ""]
    )
    after: tuple[datetime, str] | None = None
    if cursor:
        position = decode_cursor(header.cursor_key, listing, cursor)
        try:
            at_text, last_id = position
            after = (datetime.fromisoformat(at_text), str(last_id))
        except (TypeError, ValueError):
            raise InvalidCursor("the cursor is malformed") from None
    rows = store.page_access_events(
        session,
        since=since_at,
        types=sorted(set(types)),
        user_id=user_id,
        after=after,
        limit=limit,
    )
    next_cursor = (
        encode_cursor(header.cursor_key, listing, [rows[-1].at.isoformat(), rows[-1].id])
        if len(rows) == limit
        else None
    )
    return {
        "items": [_event_json(r) for r in rows],
        "next_cursor": next_cursor,
        "version": header.version,
    }


def dormant_report(session: Session, *, days: int, roles_enabled: bool) -> dict[str, Any]:
    header = read_header(session)
    require_synced(header)
    cursor = store.read_cursor(session)
    if cursor.read_to is None:
        raise ActivityLogNotRead
    now = utcnow()
    rows = store.dormant_teammates(session, signed_in_before=now - timedelta(days=days))
    items = [
        {
            "id": r.id,
            "name": r.name,
            "email": r.email,
            "account_type": r.account_type,
            "has_inbox_seat": r.has_inbox_seat,
            "role": (
                {"id": r.role_id, "name": r.role_name}
                if roles_enabled and r.role_id is not None
                else None
            ),
            "teams": [{"id": tid, "name": name} for tid, name in r.teams],
            "last_login_at": iso(r.last_login_at),
            "last_login_method": r.last_login_method,
        }
        for r in rows
    ]
    return {
        "days": days,
        "as_of": iso(now),
        "activity_log_read_to": iso(cursor.read_to),
        "version": header.version,
        "items": items,
    }


CSV_COLUMNS = (
    "id",
    "name",
    "email",
    "account_type",
    "has_inbox_seat",
    "role",
    "teams",
    "last_login_at",
    "last_login_method",
)


def dormant_csv(report: dict[str, Any]) -> str:
    """The report as CSV: one row per teammate, teams by name separated by `; `."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in report["items"]:
        role = item["role"]
        writer.writerow(
            [
                _cell(item["id"]),
                _cell(item["name"]),
                _cell(item["email"]),
                item["account_type"],
                "true" if item["has_inbox_seat"] else "false",
                _cell(role["name"] or role["id"]) if role else "",
                _cell("; ".join(t["name"] or t["id"] for t in item["teams"])),
                item["last_login_at"] or "",
                _cell(item["last_login_method"]),
            ]
        )
    return out.getvalue()


def _cell(value: str | None) -> str:
    # A name from Intercom that starts like a formula must not run in a spreadsheet.
    text = value or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
