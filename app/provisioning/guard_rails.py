"""The checks a destructive request passes before anything is sent: the store is
synced and knows the teammate and team; protected teammates (PROTECTED_ADMIN_IDS, the
reassignment target, the token's own teammate) are never removed; a team is never emptied nor
grown past what Intercom accepts. Each failed check is a `Refusal`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.provisioning.intercom_calls import IntercomCalls
from app.provisioning.request import Refusal
from app.settings import Settings
from app.store import provisioning as records
from app.store.engine import Database
from app.store.reads import has_team, team_member_ids, teammate_is_active
from app.store.versioning import read_header

MAX_TEAM_MEMBERS = 1000


@dataclass(frozen=True)
class StoreView:
    """What the store knows of a request's teammate, team and reassignment target."""

    synced: bool
    user_active: bool | None  # None: unknown to the store
    team_exists: bool
    team_member_ids: list[str]
    target_active: bool | None


def read_store_view(
    db: Database, user_id: str, team_id: str | None, target: str | None
) -> StoreView:
    with db.reading() as session:
        synced = read_header(session).last_sync_at is not None
        user_active = _active(session, user_id)
        target_active = _active(session, target) if target not in (None, "0") else None
        members: list[str] = []
        team_exists = False
        if team_id is not None:
            team_exists = has_team(session, team_id)
            members = sorted(team_member_ids(session, team_id))
    return StoreView(synced, user_active, team_exists, members, target_active)


def _active(session: Session, user_id: str | None) -> bool | None:
    return None if user_id is None else teammate_is_active(session, user_id)


def require_synced(view: StoreView) -> None:
    if not view.synced:
        raise Refusal(
            503,
            "not_synced",
            "no baseline has succeeded yet: the service cannot check the request",
            headers={"Retry-After": "30"},
            transient=True,
        )


async def refuse_protected(
    user_id: str, *, target: str | None, settings: Settings, intercom: IntercomCalls
) -> None:
    if user_id in settings.protected_admin_ids:
        raise Refusal(
            409,
            "protected_teammate",
            f"teammate {user_id} is protected (PROTECTED_ADMIN_IDS)",
        )
    if target is not None and user_id == target:
        raise Refusal(
            409,
            "protected_teammate",
            f"teammate {user_id} is the reassignment target and cannot be removed",
        )
    if user_id == await intercom.own_teammate():
        raise Refusal(
            409,
            "protected_teammate",
            f"teammate {user_id} is the one Intercom's access token acts as",
        )


def members_after_change(
    user_id: str,
    team_id: str,
    members: list[str],
    adding: bool,
    read_call: records.IntercomCall | None,
) -> list[str] | None:
    """The member list to send, or None when nothing is to change. `read_call` is the read
    of the team that the refusal names, if one was made."""
    if adding == (user_id in members):
        return None
    new = [*members, user_id] if adding else [m for m in members if m != user_id]
    if not new:
        raise Refusal(
            409,
            "team_cannot_be_empty",
            f"teammate {user_id} is the last member of team {team_id}; Intercom cannot "
            "empty a team",
            intercom=read_call,
        )
    if len(new) > MAX_TEAM_MEMBERS:
        raise Refusal(
            409,
            "team_too_large",
            f"team {team_id} would have more than {MAX_TEAM_MEMBERS} members, the most "
            "Intercom accepts",
            intercom=read_call,
        )
    return new
