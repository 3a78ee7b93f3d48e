"""Adding a teammate to a team or taking one out (`PUT /teams/{id}`, Preview).

Intercom takes a team's whole member list, so a change is a read-modify-write: read the team,
send the list with the one teammate added or taken out, store what Intercom confirms. Writes
to one team are serialized across every process sharing the store (the team lock in
app/store/provisioning.py), and a 409 from Intercom (someone else changed the team) is
answered by reading it again, a few times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.intercom.errors import IntercomConflict, IntercomError, IntercomNotFound
from app.intercom.models import IntercomTeam
from app.intercom.writes import intercom_write
from app.provisioning.guard_rails import (
    members_after_change,
    read_store_view,
    refuse_protected,
    require_synced,
)
from app.provisioning.intercom_calls import WRITE_BUDGET_SECONDS, IntercomCalls, refusal_for
from app.provisioning.request import (
    ADD_TEAM_MEMBER,
    Outcome,
    Refusal,
    Request,
    StoreChange,
)
from app.provisioning.store_apply import apply_confirmed_members
from app.settings import Settings
from app.store import locks
from app.store import provisioning as records
from app.store.engine import Database

logger = logging.getLogger(__name__)

TEAM_WRITE_VERSION = "Preview"
TEAM_CONFLICT_ATTEMPTS = 3
TEAM_LOCK_WAIT_SECONDS = 60.0
TEAM_LOCK_POLL_SECONDS = 0.02


def _admin_ids(ids: list[str]) -> list[int | str]:
    """Ids as Intercom's team body wants them: numbers."""
    return [int(i) if i.isdigit() else i for i in ids]


def _confirmed_members(body: Any, sent: list[str]) -> list[str]:
    """The member list Intercom answered with; what was sent when the answer has none."""
    if isinstance(body, dict) and isinstance(body.get("admin_ids"), list):
        try:
            return list(IntercomTeam.model_validate(body).admin_ids)
        except ValueError:
            return sent
    return sent


class TeamMemberChange:
    """One per process; `run` takes a request through to its outcome."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        intercom: IntercomCalls,
        *,
        request_refresh: Callable[[], None],
    ) -> None:
        self._db = db
        self._settings = settings
        self._intercom = intercom
        self._request_refresh = request_refresh

    async def run(self, request: Request) -> Outcome:
        team_id = request.team_id
        assert team_id is not None
        adding = request.action == ADD_TEAM_MEMBER
        view = await run_in_threadpool(read_store_view, self._db, request.user_id, team_id, None)
        require_synced(view)
        if not view.team_exists:
            raise Refusal(404, "not_found", f"there is no team {team_id}")
        if not view.user_active:
            raise Refusal(404, "not_found", f"there is no active teammate {request.user_id}")
        if not adding:
            await refuse_protected(
                request.user_id,
                target=self._settings.removal_reassign_admin_id,
                settings=self._settings,
                intercom=self._intercom,
            )
        if request.dry_run:
            return _dry_run(request.user_id, team_id, view.team_member_ids, adding)
        lock = await self._team_lock(team_id)
        try:
            return await self._change_locked(request.user_id, team_id, adding)
        finally:
            await run_in_threadpool(lock.release)

    async def _team_lock(self, team_id: str) -> locks.TeamLock:
        deadline = time.monotonic() + TEAM_LOCK_WAIT_SECONDS
        while True:
            lock = await run_in_threadpool(locks.try_team_lock, self._db, team_id)
            if lock is not None:
                return lock
            if time.monotonic() >= deadline:
                raise Refusal(
                    503,
                    "team_busy",
                    f"another request kept team {team_id} busy; try again",
                    headers={"Retry-After": "5"},
                    transient=True,
                )
            await asyncio.sleep(TEAM_LOCK_POLL_SECONDS)

    async def _change_locked(self, user_id: str, team_id: str, adding: bool) -> Outcome:
        client = self._intercom.client()
        path = f"/teams/{team_id}"
        conflicted: records.IntercomCall | None = None
        try:
            for attempt in range(1, TEAM_CONFLICT_ATTEMPTS + 1):
                try:
                    team = await client.get_team(team_id)
                except IntercomNotFound:
                    self._request_refresh()
                    raise Refusal(
                        404,
                        "not_found",
                        f"Intercom does not know team {team_id}; a refresh was requested",
                        intercom=("GET", path, None, 404),
                    ) from None
                except IntercomError as exc:
                    raise refusal_for(exc, "GET", path, None, removal=False) from None
                read_call = ("GET", path, None, 200)
                current = list(team.admin_ids)
                new = members_after_change(user_id, team_id, current, adding, read_call)
                if new is None:
                    store = self._store_members(team_id, current)
                    if conflicted is not None:
                        # Our earlier PUT was "partly applied" and the part was ours: done.
                        return Outcome("added" if adding else "removed", 200, conflicted, store)
                    return Outcome("unchanged", 200, read_call, store)
                body = {"admin_ids": _admin_ids(new)}
                try:
                    answer = await intercom_write(
                        client,
                        "PUT",
                        path,
                        json_body=body,
                        endpoint="team_put",
                        api_version=TEAM_WRITE_VERSION,
                        budget_seconds=WRITE_BUDGET_SECONDS,
                    )
                except IntercomConflict as exc:
                    conflicted = ("PUT", path, body, 409)
                    if attempt < TEAM_CONFLICT_ATTEMPTS:
                        logger.info("Intercom answered 409 to PUT %s; reading the team again", path)
                        continue
                    raise Refusal(
                        409,
                        "intercom_conflict",
                        f"Intercom answered 409 ({exc.intercom_code or 'conflict'}) to PUT "
                        f"{path} {TEAM_CONFLICT_ATTEMPTS} times; read the team and try again",
                        intercom=("PUT", path, body, 409),
                    ) from None
                except IntercomError as exc:
                    raise refusal_for(exc, "PUT", path, body, removal=False) from None
                confirmed = _confirmed_members(answer.body, new)
                result = "added" if adding else "removed"
                store = self._store_members(team_id, confirmed)
                return Outcome(result, 200, ("PUT", path, body, answer.status), store)
        finally:
            await client.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    def _store_members(self, team_id: str, member_ids: list[str]) -> StoreChange:
        async def store(finish: records.FinishFn) -> records.RequestRecord:
            applied = await run_in_threadpool(
                apply_confirmed_members, self._db, team_id, member_ids, finish=finish
            )
            return applied.record

        return store


def _dry_run(user_id: str, team_id: str, members: list[str], adding: bool) -> Outcome:
    new = members_after_change(user_id, team_id, members, adding, None)
    if new is None:
        return Outcome("unchanged", 200, None)
    body = {"admin_ids": _admin_ids(new)}
    return Outcome(
        "would_add" if adding else "would_remove", 200, ("PUT", f"/teams/{team_id}", body, None)
    )
