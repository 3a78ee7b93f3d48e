"""Stage 4, applying one stored notification to the store (the inbox drainer calls this for
each notification of a batch, inside the batch's transaction).

Intercom neither orders nor deduplicates deliveries, so every teammate keeps the `created_at`
of the newest state notification applied to it (`event_watermark`; `away_watermark` for the
away-mode fields). An older notification never overwrites newer state, and on a tie a removal
wins, so a removal is never undone by an "added" of the same or an earlier second; nor by an
"added" created before a baseline saw the teammate gone. A removal writes the profile it
carries into the tombstone, so that what `include_removed` shows does not depend on the order
of arrival either, and any change to a tombstone gets a version of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.intercom.activity_log import LogEntry, parse_entry
from app.intercom.models import IntercomAdmin, user_fields_from_admin
from app.intercom.notifications import (
    ACTIVITY_LOG_TOPIC,
    Notification,
    activity_needs_refresh,
)
from app.store import directory as store
from app.store.versioning import (
    GRANT,
    USER,
    ChangeSet,
    membership_grant_id,
    role_grant_id,
)
from app.store.workset import TeammateWorkset
from app.webhooks.activity_evidence import is_usage_evidence


class ApplyOutcome(StrEnum):
    """What applying one notification came to. All but DEFERRED settle the inbox row, with the
    same value as its InboxStatus; a DEFERRED one stays pending and is retried with backoff."""

    APPLIED = "applied"
    IGNORED = "ignored"
    DEFERRED = "deferred"  # about a teammate not known yet
    REJECTED = "rejected"


@dataclass
class EventOutcome:
    status: ApplyOutcome
    reason: str | None = None
    changes: ChangeSet = field(default_factory=ChangeSet)
    needs_refresh: bool = False
    # A sign-in or access event an activity-log notification carries.
    activity_entry: LogEntry | None = None


def _when(created_at: int) -> datetime:
    return datetime.fromtimestamp(created_at, UTC)


def future_reason(created_at: int | None, received_at: datetime) -> str | None:
    """Why a notification created this far after its receipt is applied to nothing, or None.
    Its `created_at` would become the teammate's watermark (or sign-in time) and hide every
    genuine notification until then."""
    if created_at is None or not store.lies_in_future(_when(created_at), received_at):
        return None
    skew = int(store.MAX_FUTURE_SKEW.total_seconds() // 60)
    return (
        f"created_at {_when(created_at):%Y-%m-%dT%H:%M:%SZ} is more than {skew} minutes after "
        f"the notification was received ({received_at:%Y-%m-%dT%H:%M:%SZ}); applied to nothing"
    )


def apply_notification(
    workset: TeammateWorkset,
    notification: Notification,
    *,
    version: int,
    now: datetime,
    expected_app_id: str | None,
    received_at: datetime | None = None,
) -> EventOutcome:
    """Apply one notification to `workset` (the caller flushes it in its transaction).
    `version` is the version the transaction will commit as, stamped on changed rows;
    `received_at` is when the delivery arrived (`now` if not given)."""
    if expected_app_id and notification.app_id and notification.app_id != expected_app_id:
        return EventOutcome(
            ApplyOutcome.IGNORED, f"notification for workspace {notification.app_id}"
        )
    # Receiving refuses these already; one stored by an earlier release is refused here.
    future = future_reason(notification.created_at, received_at or now)
    if future is not None:
        return EventOutcome(ApplyOutcome.REJECTED, future)
    topic = notification.topic
    if topic == ACTIVITY_LOG_TOPIC:
        entry = parse_entry(notification.item)
        evidence = entry if entry is not None and is_usage_evidence(entry.activity_type) else None
        if activity_needs_refresh(notification.item):
            return EventOutcome(
                ApplyOutcome.APPLIED,
                "scheduled a refresh of teammates and teams",
                needs_refresh=True,
                activity_entry=evidence,
            )
        if evidence is not None:
            return EventOutcome(
                ApplyOutcome.APPLIED, "recorded as usage evidence", activity_entry=evidence
            )
        return EventOutcome(ApplyOutcome.IGNORED, "activity type does not affect access")
    admin = notification.teammate
    if admin is None:
        return EventOutcome(ApplyOutcome.IGNORED, f"topic {topic} is not handled")
    created_at = notification.created_at
    if created_at is None:
        created_at = int(now.timestamp())
    if topic == "admin.added_to_workspace":
        return _apply_added(
            workset,
            admin,
            created_at,
            version=version,
            now=now,
            has_team_ids="team_ids" in notification.item,
        )
    if topic == "admin.removed_from_workspace":
        return _apply_removed(
            workset, admin, created_at, version=version, now=now, sent=notification.item.keys()
        )
    if topic == "admin.away_mode_updated":
        return _apply_away(workset, admin, created_at, version=version, now=now)
    if topic in ("admin.logged_in", "admin.logged_out"):
        return _apply_login(
            workset, admin, created_at, version=version, logged_in=topic == "admin.logged_in"
        )
    return EventOutcome(ApplyOutcome.IGNORED, f"topic {topic} is not handled")


def _apply_added(
    workset: TeammateWorkset,
    admin: IntercomAdmin,
    created_at: int,
    *,
    version: int,
    now: datetime,
    has_team_ids: bool,
) -> EventOutcome:
    user = workset.get_user(admin.id)
    if user is not None and user.event_watermark is not None and created_at <= user.event_watermark:
        return EventOutcome(
            ApplyOutcome.IGNORED, "older than the newest notification applied to this teammate"
        )
    if user is not None and user.removed_at is not None and _when(created_at) <= user.removed_at:
        # Removed by a baseline that ran after this notification was created (a late delivery):
        # it must not bring them back. A baseline has no Intercom timestamp of its own, though,
        # so let a refresh settle whether they were added again since.
        return EventOutcome(
            ApplyOutcome.IGNORED,
            "the teammate was removed after this notification was created",
            needs_refresh=True,
        )
    fields = user_fields_from_admin(admin, roles_supported=False)
    unstorable = store.unstorable_reason(fields)
    if unstorable is not None:
        return EventOutcome(ApplyOutcome.IGNORED, unstorable)
    outcome = EventOutcome(ApplyOutcome.APPLIED)
    # Webhook payloads carry no role: keep what the last baseline said.
    fields["role_id"] = user.fields["role_id"] if user is not None and user.active else None
    away_watermark = created_at
    if user is not None and user.away_watermark is not None and user.away_watermark > created_at:
        for name in store.AWAY_FIELDS:
            fields[name] = user.fields[name]
        away_watermark = user.away_watermark
    bookkeeping = {
        "event_watermark": created_at,
        "away_watermark": away_watermark,
        "event_applied_at": now,
    }
    if user is None:
        # Not seen by a baseline: the next one removes them unless Intercom lists them.
        workset.insert_user(
            {
                "id": admin.id,
                **fields,
                **bookkeeping,
                "updated_version": version,
                "seen_by_baseline": False,
            }
        )
        outcome.changes.upsert(USER, admin.id)
    else:
        values: dict[str, Any] = {**bookkeeping}
        if not user.active or user.fields != fields:
            values.update(fields, removed_at=None, updated_version=version)
            outcome.changes.upsert(USER, admin.id)
            if fields["role_id"] and (not user.active or user.fields["role_id"] is None):
                outcome.changes.upsert(GRANT, role_grant_id(fields["role_id"], admin.id))
        workset.update_user(admin.id, values)
    if has_team_ids:
        known = workset.known_team_ids(admin.team_ids)
        if len(known) < len(set(admin.team_ids)):
            outcome.needs_refresh = True  # a team we have not seen yet: fetch the teams
        current = workset.user_team_ids(admin.id) if user is not None else set()
        added = known - current
        removed = current - known
        workset.add_memberships([(tid, admin.id) for tid in added])
        workset.remove_memberships([(tid, admin.id) for tid in removed])
        for tid in added:
            outcome.changes.upsert(GRANT, membership_grant_id(tid, admin.id))
        for tid in removed:
            outcome.changes.delete(GRANT, membership_grant_id(tid, admin.id))
    return outcome


def _apply_removed(
    workset: TeammateWorkset,
    admin: IntercomAdmin,
    created_at: int,
    *,
    version: int,
    now: datetime,
    sent: Iterable[str],
) -> EventOutcome:
    user = workset.get_user(admin.id)
    if user is not None and user.event_watermark is not None and created_at < user.event_watermark:
        return EventOutcome(
            ApplyOutcome.IGNORED, "older than the newest notification applied to this teammate"
        )
    bookkeeping = {"event_watermark": created_at, "event_applied_at": now}
    if user is None:
        # Keep a tombstone with the watermark, so a late, older "added" cannot resurrect them.
        # (A ghost's: a baseline deletes it once no notification touched it for the time the
        # inbox keeps deliveries.)
        fields = user_fields_from_admin(admin, roles_supported=False)
        if store.unstorable_reason(fields) is not None:
            fields["email"] = None  # never cut short; the removal itself must still apply
        workset.insert_user(
            {
                "id": admin.id,
                **fields,
                **bookkeeping,
                "away_watermark": created_at,
                "removed_at": _when(created_at),
                "updated_version": version,
                "seen_by_baseline": False,
            }
        )
        outcome = EventOutcome(ApplyOutcome.APPLIED, "teammate was not known; tombstone recorded")
        _tombstone_changed(outcome, admin.id)
        return outcome
    # The tombstone keeps the teammate as this (newest) notification describes them, so that
    # the order in which an "added" and this removal arrive cannot change what it shows.
    tombstone = _removal_fields(admin, user, created_at, sent)
    if not user.active:
        changed = any(
            user.fields[name] != value for name, value in tombstone.items() if name in user.fields
        )
        # A baseline's removal time (when it saw them gone) may be later still: keep the later.
        removed_at = max(_when(created_at), user.removed_at or _when(created_at))
        changed |= user.removed_at != removed_at
        values: dict[str, Any] = {**bookkeeping, **tombstone, "removed_at": removed_at}
        if changed:
            values["updated_version"] = version
        workset.update_user(admin.id, values)
        outcome = EventOutcome(ApplyOutcome.APPLIED, "teammate was already removed")
        if changed:
            _tombstone_changed(outcome, admin.id)
        return outcome
    outcome = EventOutcome(ApplyOutcome.APPLIED)
    role_id = user.fields["role_id"]
    workset.update_user(
        admin.id,
        {
            **bookkeeping,
            **tombstone,
            "removed_at": _when(created_at),
            "role_id": None,
            "updated_version": version,
        },
    )
    outcome.changes.delete(USER, admin.id)
    if role_id:
        outcome.changes.delete(GRANT, role_grant_id(role_id, admin.id))
    team_ids = workset.user_team_ids(admin.id)
    workset.remove_memberships([(tid, admin.id) for tid in team_ids])
    for tid in team_ids:
        outcome.changes.delete(GRANT, membership_grant_id(tid, admin.id))
    return outcome


def _removal_fields(
    admin: IntercomAdmin, user: store.StoredUser, created_at: int, sent: Iterable[str]
) -> dict[str, Any]:
    """The profile a removal notification carries, limited to the fields it actually sent;
    the away fields only when no newer away-mode change has been applied."""
    keys = set(sent)
    parsed = user_fields_from_admin(admin, roles_supported=False)
    profile = ("name", "email", "job_title", "has_inbox_seat")
    if store.unstorable_reason(parsed) is not None:
        keys.discard("email")  # never cut short: the tombstone keeps the email it had
    fields = {name: parsed[name] for name in profile if name in keys}
    if "email" in keys:
        fields["account_type"] = parsed["account_type"]
    if user.away_watermark is None or created_at >= user.away_watermark:
        away = {name: parsed[name] for name in store.AWAY_FIELDS if name in keys}
        if away:
            fields.update(away, away_watermark=created_at)
    return fields


def _apply_away(
    workset: TeammateWorkset, admin: IntercomAdmin, created_at: int, *, version: int, now: datetime
) -> EventOutcome:
    user = workset.get_user(admin.id)
    if user is None:
        return EventOutcome(ApplyOutcome.DEFERRED, "teammate not known yet", needs_refresh=True)
    if user.away_watermark is not None and created_at <= user.away_watermark:
        return EventOutcome(ApplyOutcome.IGNORED, "older than the newest away-mode change applied")
    values: dict[str, Any] = {
        "away_mode_enabled": admin.away_mode_enabled,
        "away_mode_reassign": admin.away_mode_reassign,
        "away_watermark": created_at,
        "event_applied_at": now,
    }
    outcome = EventOutcome(ApplyOutcome.APPLIED)
    changed = any(user.fields[name] != values[name] for name in store.AWAY_FIELDS)
    if changed:
        values["updated_version"] = version
        if user.active:
            outcome.changes.upsert(USER, admin.id)
        else:
            _tombstone_changed(outcome, admin.id)
    workset.update_user(admin.id, values)
    return outcome


def _apply_login(
    workset: TeammateWorkset,
    admin: IntercomAdmin,
    created_at: int,
    *,
    version: int,
    logged_in: bool,
) -> EventOutcome:
    user = workset.get_user(admin.id)
    if user is None:
        return EventOutcome(ApplyOutcome.DEFERRED, "teammate not known yet", needs_refresh=True)
    when = _when(created_at)
    column = "last_login_at" if logged_in else "last_logout_at"
    previous = user.last_login_at if logged_in else user.last_logout_at
    if previous is not None and previous >= when:
        return EventOutcome(ApplyOutcome.IGNORED, "an equal or newer sign-in time is recorded")
    outcome = EventOutcome(ApplyOutcome.APPLIED)
    values: dict[str, Any] = {column: when}
    # Only the sign-in time is served (C1 reads last login in access reviews).
    if logged_in:
        values["updated_version"] = version
        if user.active:
            outcome.changes.upsert(USER, admin.id)
        else:
            _tombstone_changed(outcome, admin.id)
    workset.update_user(admin.id, values)
    return outcome


def _tombstone_changed(outcome: EventOutcome, user_id: str) -> None:
    """A removed teammate's row changed. It is served only under `include_removed`, but that
    body is cached per version, so the change still needs a version of its own; it goes in the
    change log as a delete, since the teammate stays gone."""
    outcome.changes.delete(USER, user_id)
