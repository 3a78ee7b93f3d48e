"""Writing a change Intercom has confirmed into the store, through the same code the webhook
path uses (the teammate workset, `apply_notification`, the change log), so that versions,
grants and the change feed come out exactly as if the notification had arrived, and the real
notification or the next baseline then finds nothing left to change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.intercom.models import IntercomAdmin
from app.intercom.notifications import Notification
from app.store.engine import Database
from app.store.models import Team, utcnow
from app.store.provisioning import FinishFn as Finish
from app.store.provisioning import RequestRecord
from app.store.reads import team_member_ids
from app.store.versioning import GRANT, ChangeSet, lock_store_state, membership_grant_id
from app.store.versioning import record_changes as log_changes
from app.store.workset import TeammateWorkset

REMOVAL_TOPIC = "admin.removed_from_workspace"


class Applies(Protocol):
    @property
    def changes(self) -> ChangeSet: ...


class NotificationApplier(Protocol):
    """The webhook path's `app.webhooks.apply_notification.apply_notification`, handed in by
    app.main (engines do not import each other)."""

    def __call__(
        self,
        workset: TeammateWorkset,
        notification: Notification,
        *,
        version: int,
        now: datetime,
        expected_app_id: str | None,
    ) -> Applies: ...


@dataclass(frozen=True)
class Applied:
    record: RequestRecord
    version: int
    changed: int


def apply_confirmed_removal(
    db: Database, user_id: str, *, finish: Finish, apply_notification: NotificationApplier
) -> Applied:
    """Intercom removed `user_id`: store it as the `admin.removed_from_workspace` notification
    Intercom sends for it would be stored, and close the request record in the same commit.

    The notification is stamped with this second; the real one was created when Intercom
    removed the teammate, no later, so when it arrives it is not newer and changes nothing.
    It carries only the id: the tombstone keeps the profile the store last saw."""
    with db.writing() as session:
        now = utcnow()
        state = lock_store_state(session)
        workset = TeammateWorkset(session)
        notification = Notification(
            id=None,
            topic=REMOVAL_TOPIC,
            app_id=None,
            created_at=int(now.timestamp()),
            item={"type": "admin", "id": user_id},
            item_id=user_id,
            teammate=IntercomAdmin(id=user_id),
        )
        user = workset.get_user(user_id)
        changes = ChangeSet()
        if user is not None and user.active:
            outcome = apply_notification(
                workset, notification, version=state.version + 1, now=now, expected_app_id=None
            )
            workset.flush()
            changes = outcome.changes
        version = log_changes(session, state, changes, at=now)
        return Applied(finish(session), version, len(changes))


def apply_confirmed_members(
    db: Database, team_id: str, member_ids: list[str], *, finish: Finish, at: datetime | None = None
) -> Applied:
    """Intercom answered `team_id`'s member list after a write: make the store's memberships of
    that team equal to it (for the active teammates the store knows; an unknown one is left to
    the next baseline, as a webhook would leave it), and close the request in the same commit."""
    with db.writing() as session:
        now = at or utcnow()
        state = lock_store_state(session)
        changes = ChangeSet()
        if session.get(Team, team_id) is not None:
            current = set(team_member_ids(session, team_id))
            workset = TeammateWorkset(session)
            workset.load([*current, *member_ids], [team_id])
            wanted = set()
            for uid in member_ids:
                user = workset.get_user(uid)
                if user is not None and user.active:
                    wanted.add(uid)
            added = wanted - current
            removed = current - set(member_ids)
            workset.add_memberships((team_id, uid) for uid in added)
            workset.remove_memberships((team_id, uid) for uid in removed)
            workset.flush()
            for uid in added:
                changes.upsert(GRANT, membership_grant_id(team_id, uid))
            for uid in removed:
                changes.delete(GRANT, membership_grant_id(team_id, uid))
        version = log_changes(session, state, changes, at=now)
        return Applied(finish(session), version, len(changes))


def finish_only(db: Database, finish: Finish) -> RequestRecord:
    """Close a request that changed nothing in the store."""
    with db.writing() as session:
        return finish(session)
