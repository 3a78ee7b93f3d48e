"""`admin.activity_log_event.created` notifications as usage evidence: the same
classification as the log read after each baseline. The inbox drainer calls this
inside its batch transaction, with the version that transaction commits as."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from app.intercom.activity_log import LogEntry
from app.intercom.activity_types import SIGN_IN_SUCCESS, is_access_event
from app.store import activity as store
from app.store.versioning import ChangeSet


def is_usage_evidence(activity_type: str) -> bool:
    return activity_type == SIGN_IN_SUCCESS or is_access_event(activity_type)


def apply_webhook_entries(
    session: Session, entries: Iterable[LogEntry], *, version: int, now: datetime
) -> ChangeSet:
    """Store the access events (deduplicated with the log's on the entry id) and apply the
    sign-ins (newest wins, never more than 5 minutes ahead of `now`)."""
    latest_allowed = now + store.MAX_FUTURE
    access: list[LogEntry] = []
    newest: dict[str, store.SignIn] = {}
    for entry in entries:
        if entry.at > latest_allowed:
            continue
        if entry.activity_type == SIGN_IN_SUCCESS and entry.actor_id is not None:
            known = newest.get(entry.actor_id)
            if known is None or entry.at > known.at:
                newest[entry.actor_id] = store.SignIn(
                    entry.actor_id, entry.at, entry.sign_in_method
                )
        elif is_access_event(entry.activity_type):
            access.append(entry)
    store.store_access_events(session, access, source="webhook", now=now)
    return store.write_sign_ins(session, newest, version=version)
