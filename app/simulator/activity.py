"""The simulator's admin activity log (Intercom's ``activity_log``), served by
``GET /admins/activity_logs``, ``POST /admins/activity_logs/search`` and
``GET /admins/activity_log_event_types``.

Entries recorded through the control plane are kept in memory; a benchmark's year of sign-ins
(millions of entries) is computed on demand by ``SyntheticLog`` instead, so the simulator's
memory does not grow with the log it serves. Entries are served oldest first, and a page is
addressed by number (``page``, or the ``starting_after`` token of ``pages.next``).
"""

from __future__ import annotations

import base64
import bisect
import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Every `activity_type` of Intercom's OpenAPI description 2.16 (schema `activity_log`), in its
# order: 114 values.
ACTIVITY_TYPES: tuple[str, ...] = (
    "admin_conversation_assignment_limit_change",
    "admin_ticket_assignment_limit_change",
    "admin_avatar_change",
    "admin_away_mode_change",
    "admin_deletion",
    "admin_deprovisioned",
    "admin_impersonation_end",
    "admin_impersonation_start",
    "admin_impersonation_consent_approved",
    "admin_impersonation_consent_revoked",
    "admin_invite_change",
    "admin_invite_creation",
    "admin_invite_deletion",
    "admin_login_failure",
    "admin_login_success",
    "admin_logout",
    "admin_occupancy_setting_change",
    "admin_occupancy_state_change",
    "admin_password_reset_request",
    "admin_password_reset_success",
    "admin_permission_change",
    "admin_provisioned",
    "admin_two_factor_auth_change",
    "admin_unauthorized_sign_in_method",
    "app_admin_join",
    "app_authentication_method_change",
    "app_data_deletion",
    "app_data_export",
    "app_google_sso_domain_change",
    "app_identity_verification_change",
    "app_name_change",
    "app_outbound_address_change",
    "app_package_installation",
    "app_package_token_regeneration",
    "app_package_uninstallation",
    "app_team_creation",
    "app_team_deletion",
    "app_team_membership_modification",
    "app_timezone_change",
    "app_webhook_creation",
    "app_webhook_deletion",
    "articles_in_messenger_enabled_change",
    "automatic_away_mode_setting_change",
    "bulk_delete",
    "bulk_export",
    "campaign_deletion",
    "campaign_state_change",
    "conversation_deletion_schedule_creation",
    "conversation_deletion_schedule_deletion",
    "conversation_deletion_schedule_state_change",
    "conversation_deletion_schedule_update",
    "conversation_part_deletion",
    "conversation_pdf_export",
    "conversation_topic_change",
    "conversation_topic_creation",
    "conversation_topic_deletion",
    "content_redaction_rule_creation",
    "content_redaction_rule_deletion",
    "content_redaction_rule_update",
    "csv_import_completion",
    "csv_import_creation",
    "custom_authentication_token_creation",
    "help_center_settings_change",
    "inbound_conversations_change",
    "inbox_access_change",
    "macro_creation",
    "macro_deletion",
    "macro_update",
    "macro_usage_export",
    "malicious_domains_setting_change",
    "message_deletion",
    "message_state_change",
    "messenger_api_secret_creation",
    "messenger_api_secret_deletion",
    "messenger_look_and_feel_change",
    "messenger_search_required_change",
    "messenger_spaces_change",
    "oauth_token_revocation",
    "office_hours_change",
    "role_change",
    "role_creation",
    "role_deletion",
    "ruleset_activation_title_preview",
    "ruleset_creation",
    "ruleset_deletion",
    "search_browse_enabled_change",
    "search_browse_required_change",
    "seat_change",
    "seat_revoke",
    "security_settings_change",
    "series_creation",
    "series_deletion",
    "series_settings_update",
    "series_status_change",
    "series_update",
    "strip_inbound_email_links_change",
    "temporary_expectation_change",
    "team_assignment_limit_change",
    "trusted_domains_setting_change",
    "unassign_unsnoozed_at_capacity_setting_change",
    "unassign_unsnoozed_when_away_setting_change",
    "upfront_email_collection_change",
    "allowed_attachment_filetypes_setting_change",
    "attach_uploads_inline_setting_change",
    "teammate_gifs_setting_change",
    "user_camera_attachments_setting_change",
    "user_conversation_attachments_setting_change",
    "user_file_attachments_setting_change",
    "user_gifs_setting_change",
    "user_media_attachments_setting_change",
    "user_voice_notes_setting_change",
    "welcome_message_change",
    "workspace_deletion_request",
    "hide_csat_from_agents_setting_change",
)

_DESCRIPTIONS = {
    "admin_login_success": "{name} successfully logged in",
    "admin_login_failure": "{name} failed to log in",
    "admin_logout": "{name} logged out",
    "admin_permission_change": "{name} changed a teammate's permissions",
    "seat_change": "{name} changed a teammate's seat",
    "app_team_membership_modification": "{name} changed a team's membership",
    "role_change": "{name} changed a teammate's role",
}

LIST_PER_PAGE = 20
SEARCH_MAX_PER_PAGE = 250
MAX_WINDOW_ENTRIES_MATERIALIZED = 400_000


@dataclass(frozen=True, slots=True)
class SimActivity:
    """One activity-log entry."""

    id: str
    created_at: int
    activity_type: str
    admin_id: str
    email: str | None = None
    ip: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as Intercom sends it."""
        return {
            "id": self.id,
            "performed_by": {
                "type": "admin",
                "id": self.admin_id,
                "email": self.email,
                "ip": self.ip,
            },
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "created_at": self.created_at,
            "activity_type": self.activity_type,
            "activity_description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, now: int) -> SimActivity:
        """Parse control-plane JSON: ``admin_id`` and ``activity_type`` are required."""
        activity_type = data.get("activity_type")
        if not isinstance(activity_type, str) or not activity_type:
            raise ValueError("'activity_type' is a required string")
        admin_id = data.get("admin_id")
        if isinstance(admin_id, bool) or not isinstance(admin_id, str | int):
            raise ValueError("'admin_id' is a required string or integer id")
        created_at = data.get("created_at", now)
        if isinstance(created_at, bool) or not isinstance(created_at, int):
            raise ValueError("'created_at' must be an integer unix timestamp")
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("'metadata' must be an object or null")
        entry_id = data.get("id", str(uuid.uuid4()))
        if not isinstance(entry_id, str) or not entry_id:
            raise ValueError("'id' must be a non-empty string")
        for name in ("email", "ip", "description"):
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise ValueError(f"'{name}' must be a string or null")
        return cls(
            id=entry_id,
            created_at=created_at,
            activity_type=activity_type,
            admin_id=str(admin_id),
            email=data.get("email"),
            ip=data.get("ip"),
            description=data.get("description"),
            metadata=metadata,
        )


# Access events a synthetic log mixes in between the sign-ins, in turn.
SYNTHETIC_ACCESS_TYPES = (
    "admin_permission_change",
    "seat_change",
    "app_team_membership_modification",
    "admin_login_failure",
    "role_change",
)
_SIGN_IN_START = 8 * 3600
_SIGN_IN_SPAN = 9 * 3600


@dataclass(frozen=True)
class SyntheticLog:
    """One sign-in per teammate per working day (Monday to Friday, UTC), plus
    ``access_events_per_day`` access events, between 08:00 and 17:00 UTC, over ``days`` days
    from ``start`` (a midnight). Nothing is stored: a window's entries are computed."""

    admins: Sequence[tuple[str, str]]  # (id, email)
    start: int
    days: int
    access_events_per_day: int = 0

    def __post_init__(self) -> None:
        if self.start % 86400:
            raise ValueError("a synthetic log starts at midnight UTC")
        if not self.admins:
            raise ValueError("a synthetic log needs teammates")
        if self.per_day > _SIGN_IN_SPAN:
            raise ValueError("too many entries per day for one a second")

    @property
    def per_day(self) -> int:
        return len(self.admins) + self.access_events_per_day

    @property
    def step(self) -> int:
        return max(1, _SIGN_IN_SPAN // self.per_day)

    def _working(self, day: int) -> bool:
        # 1970-01-01 was a Thursday (weekday 3, Monday being 0).
        return (3 + self.start // 86400 + day) % 7 < 5

    def _day_range(self, day: int, lo: int, hi: int) -> range:
        base = self.start + day * 86400 + _SIGN_IN_START
        first = max(0, math.ceil((lo - base) / self.step))
        last = min(self.per_day - 1, (hi - base) // self.step)
        return range(first, last + 1) if last >= first else range(0)

    def _days(self, lo: int, hi: int) -> range:
        first = max(0, (lo - self.start) // 86400)
        last = min(self.days - 1, (hi - self.start) // 86400)
        return range(first, last + 1) if last >= first else range(0)

    def _type_of(self, k: int) -> str:
        n = len(self.admins)
        if k < n:
            return "admin_login_success"
        return SYNTHETIC_ACCESS_TYPES[(k - n) % len(SYNTHETIC_ACCESS_TYPES)]

    def _count_in(self, ks: range, types: frozenset[str] | None) -> int:
        if types is None:
            return len(ks)
        n = len(self.admins)
        sign_ins = max(0, min(ks.stop, n) - ks.start) if "admin_login_success" in types else 0
        return sign_ins + sum(
            1 for k in range(max(ks.start, n), ks.stop) if self._type_of(k) in types
        )

    def count(self, lo: int, hi: int, types: frozenset[str] | None) -> int:
        """How many entries fall in [lo, hi] (with one of ``types``)."""
        return sum(
            self._count_in(self._day_range(day, lo, hi), types)
            for day in self._days(lo, hi)
            if self._working(day)
        )

    def slice(
        self, lo: int, hi: int, types: frozenset[str] | None, offset: int, limit: int
    ) -> list[SimActivity]:
        """Entries ``offset`` to ``offset + limit`` of the window, oldest first."""
        out: list[SimActivity] = []
        skipped = 0
        for day in self._days(lo, hi):
            if not self._working(day):
                continue
            ks = self._day_range(day, lo, hi)
            in_day = self._count_in(ks, types)
            if skipped + in_day <= offset:
                skipped += in_day
                continue
            for k in ks:
                if types is not None and self._type_of(k) not in types:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(self.entry(day, k))
                if len(out) >= limit:
                    return out
        return out

    def entry(self, day: int, k: int) -> SimActivity:
        """The ``k``-th entry of ``day``."""
        n = len(self.admins)
        created_at = self.start + day * 86400 + _SIGN_IN_START + k * self.step
        if k < n:
            admin_id, email = self.admins[(k + day) % n]
            return SimActivity(
                id=f"{day:08x}-0000-4000-8000-{k:012x}",
                created_at=created_at,
                activity_type="admin_login_success",
                admin_id=admin_id,
                email=email,
                ip="203.0.113.7",
                description=f"{email} successfully logged in",
                metadata={"sign_in_method": "email_password"},
            )
        j = k - n
        admin_id, email = self.admins[(j * 37 + day) % n]
        activity_type = SYNTHETIC_ACCESS_TYPES[j % len(SYNTHETIC_ACCESS_TYPES)]
        return SimActivity(
            id=f"{day:08x}-0001-4000-8000-{k:012x}",
            created_at=created_at,
            activity_type=activity_type,
            admin_id=admin_id,
            email=email,
            ip="203.0.113.9",
            description=f"{email}: {activity_type}",
            metadata={"before": {"state": "before"}, "after": {"state": "after"}},
        )


@dataclass
class SimActivityLog:
    """Recorded entries (sorted by time) plus an optional synthetic log."""

    _entries: list[SimActivity] = field(default_factory=list)
    _keys: list[tuple[int, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    synthetic: SyntheticLog | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: SimActivity) -> bool:
        """Add an entry; False when one with its id is already there."""
        with self.lock:
            if entry.id in self._ids:
                return False
            key = (entry.created_at, entry.id)
            index = bisect.bisect(self._keys, key)
            self._keys.insert(index, key)
            self._entries.insert(index, entry)
            self._ids.add(entry.id)
            return True

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self._keys.clear()
            self._ids.clear()
            self.synthetic = None

    def entries(self) -> list[SimActivity]:
        with self.lock:
            return list(self._entries)

    def window(
        self,
        lo: int,
        hi: int,
        *,
        types: frozenset[str] | None,
        page: int,
        per_page: int,
    ) -> tuple[list[SimActivity], int]:
        """One page (1-based) of the entries in [lo, hi], oldest first, and the total count."""
        with self.lock:
            start = bisect.bisect_left(self._keys, (lo, ""))
            stop = bisect.bisect_left(self._keys, (hi + 1, ""))
            recorded = [
                e for e in self._entries[start:stop] if types is None or e.activity_type in types
            ]
            synthetic = self.synthetic
        offset = (page - 1) * per_page
        if synthetic is None:
            return recorded[offset : offset + per_page], len(recorded)
        total = synthetic.count(lo, hi, types) + len(recorded)
        if not recorded:
            return synthetic.slice(lo, hi, types, offset, per_page), total
        # Both kinds in one window: merge them in time order (tests, not benchmarks, do this).
        if total > MAX_WINDOW_ENTRIES_MATERIALIZED:
            raise ValueError("window too large to merge recorded and synthetic entries")
        merged = sorted(
            [*synthetic.slice(lo, hi, types, 0, total), *recorded],
            key=lambda e: (e.created_at, e.id),
        )
        return merged[offset : offset + per_page], total


def page_token(page: int) -> str:
    """The opaque ``starting_after`` of ``pages.next``."""
    return base64.urlsafe_b64encode(f"page:{page}".encode()).decode().rstrip("=")


def page_from_token(token: str) -> int:
    """The page a ``starting_after`` token points at; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("starting_after is not a token this API issued") from None
    kind, _, number = raw.partition(":")
    if kind != "page" or not number.isdigit() or int(number) < 1:
        raise ValueError("starting_after is not a token this API issued")
    return int(number)


def activity_log_list(
    entries: list[SimActivity], *, page: int, per_page: int, total: int
) -> dict[str, Any]:
    """The ``activity_log.list`` body for one page."""
    total_pages = max(1, math.ceil(total / per_page)) if total else 0
    more = page < total_pages
    return {
        "type": "activity_log.list",
        "pages": {
            "type": "pages",
            "next": {"per_page": per_page, "starting_after": page_token(page + 1)}
            if more
            else None,
            "page": page,
            "per_page": per_page,
            "total_pages": total_pages,
        },
        "activity_logs": [e.to_json() for e in entries],
    }


def describe(activity_type: str, name: str) -> str:
    """An ``activity_description`` in Intercom's manner."""
    template = _DESCRIPTIONS.get(activity_type, "{name}: " + activity_type.replace("_", " "))
    return template.format(name=name)
