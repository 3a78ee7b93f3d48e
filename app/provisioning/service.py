"""The provisioning requests (spec §10): remove a teammate from the workspace, add one to a
team, take one out of a team, with the guard rails a destructive call needs.

Every request that passes the syntax checks gets an audit record before Intercom is called
(`start_request`) and is finished after; the answer is that record. Order of checks:

1. the idempotency key: a repeat of a finished request answers its first answer; the same key
   with another request is 409 `idempotency_key_reused`; one still in progress is 409
   `idempotency_key_in_use`;
2. the store: synced (else 503 `not_synced`), the teammate and team known (else 404);
3. idempotence (already removed, already a member, not a member: 200, no write);
4. the guard rails (reassignment target, protected teammates, never emptying a team);
5. dry run: answer what would be sent; otherwise call Intercom and, once it confirms, store
   the change at once (app/provisioning/store_apply.py).

A dry run calls nothing, with one exception: the token's own teammate (a protected one) is
learned from `GET /me` once per process, and a dry run that comes before any other request
makes that read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.intercom.client import (
    IntercomAuthError,
    IntercomClient,
    IntercomConflict,
    IntercomError,
    IntercomNotFound,
    IntercomPlanRestricted,
    IntercomRateLimited,
    IntercomUnavailable,
    intercom_write,
    me_admin_id,
)
from app.intercom.models import IntercomTeam
from app.observability.metrics import PROVISIONING_REQUESTS
from app.provisioning.store_apply import (
    NotificationApplier,
    apply_confirmed_members,
    apply_confirmed_removal,
    finish_only,
)
from app.settings import Settings
from app.store import provisioning as records
from app.store.engine import Database
from app.store.models import Membership, Team, User
from app.store.versioning import read_header

logger = logging.getLogger(__name__)

REMOVE_USER = "remove_user"
ADD_TEAM_MEMBER = "add_team_member"
REMOVE_TEAM_MEMBER = "remove_team_member"

REMOVAL_VERSION = (2, 17)
TEAM_WRITE_VERSION = "Preview"
WRITE_BUDGET_SECONDS = 30.0
TEAM_CONFLICT_ATTEMPTS = 3
MAX_TEAM_MEMBERS = 1000
TEAM_LOCK_WAIT_SECONDS = 60.0
TEAM_LOCK_POLL_SECONDS = 0.02
REASSIGN_PARAMS = (
    "reassign_messages_admin_id",
    "reassign_owner_admin_id",
    "reassign_articles_author_id",
    "reassign_conversations_admin_id",
)


def removal_api_version(configured: str) -> str:
    """`Intercom-Version` for `DELETE /admins/remove`: 2.17, or the configured version when it
    is newer (Preview and Unstable are newer than any number)."""
    if configured.lower() in ("preview", "unstable"):
        return configured
    try:
        major, minor = (int(part) for part in configured.split(".", 1))
    except ValueError:
        return "2.17"
    return configured if (major, minor) > REMOVAL_VERSION else "2.17"


class Refusal(Exception):
    """A request answered without a change: status, our error code, a message, and what was
    called at Intercom (method, path, body, status) if anything."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        intercom: records.IntercomCall | None = None,
        headers: dict[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.intercom = intercom
        self.headers = headers or {}
        self.transient = transient


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What the route parsed: who asks, for what, under which key."""

    action: str
    user_id: str
    team_id: str | None
    dry_run: bool
    token: str
    request_hash: str
    idempotency_key: str | None
    reassign_to: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished request: the result, our status, and the Intercom call made, if any."""

    result: str
    status: int
    intercom: records.IntercomCall | None
    store: Callable[[records.FinishFn], Awaitable[records.RequestRecord]] | None = None


@dataclass(frozen=True)
class StoreView:
    synced: bool
    user_active: bool | None  # None: unknown to the store
    team_exists: bool
    team_member_ids: list[str]
    target_active: bool | None


def _read_view(db: Database, user_id: str, team_id: str | None, target: str | None) -> StoreView:
    with db.reading() as session:
        synced = read_header(session).last_sync_at is not None
        user_active = _active(session, user_id)
        target_active = _active(session, target) if target not in (None, "0") else None
        members: list[str] = []
        team_exists = False
        if team_id is not None:
            team_exists = session.get(Team, team_id) is not None
            members = sorted(
                session.execute(
                    select(Membership.user_id).where(Membership.team_id == team_id)
                ).scalars()
            )
    return StoreView(synced, user_active, team_exists, members, target_active)


def _active(session: Session, user_id: str | None) -> bool | None:
    if user_id is None:
        return None
    row = session.execute(select(User.removed_at).where(User.id == user_id)).first()
    if row is None:
        return None
    return row.removed_at is None


def _admin_ids(ids: list[str]) -> list[int | str]:
    """Ids as Intercom's team body wants them: numbers."""
    return [int(i) if i.isdigit() else i for i in ids]


class Provisioner:
    """One per process; routes call `handle`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client_factory: Callable[[], IntercomClient] | None,
        *,
        request_refresh: Callable[[], None],
        apply_notification: NotificationApplier,
    ) -> None:
        self._db = db
        self._apply_notification = apply_notification
        self._settings = settings
        self._client_factory = client_factory
        self._request_refresh = request_refresh
        self._own_admin_id: str | None = None
        self._own_lock = asyncio.Lock()

    # -- the request frame: record, run, finish, log --------------------------------------------

    async def handle(self, request: Request) -> Answer:
        requested_by = records.token_fingerprint(request.token)
        claim = await run_in_threadpool(
            records.start_request,
            self._db,
            action=request.action,
            user_id=request.user_id,
            team_id=request.team_id,
            dry_run=request.dry_run,
            requested_by=requested_by,
            request_hash=request.request_hash,
            idempotency_key=request.idempotency_key,
        )
        if not claim.created:
            try:
                return self._replay(request, claim.record)
            except Refusal as refusal:
                body = {"error": {"code": refusal.code, "message": refusal.message}}
                return Answer(refusal.status, body, refusal.headers)
        record_id = claim.record.id
        started = time.monotonic()
        try:
            outcome = await self._run(request)
        except Refusal as refusal:
            record = await run_in_threadpool(
                finish_only,
                self._db,
                _finisher(
                    record_id,
                    result="failed",
                    status=refusal.status,
                    intercom=refusal.intercom,
                    error=(refusal.code, refusal.message),
                    release_key=refusal.transient,
                ),
            )
            self._log(record, started)
            if refusal.status == 400:
                # A bad request answers the plain error body, as every 400 of the API does;
                # the audit keeps its record.
                body = {"error": {"code": refusal.code, "message": refusal.message}}
                return Answer(400, body, refusal.headers)
            return Answer(refusal.status, record.as_json(), refusal.headers)
        except BaseException:
            await run_in_threadpool(
                finish_only,
                self._db,
                _finisher(
                    record_id,
                    result="failed",
                    status=500,
                    intercom=None,
                    error=("internal_error", "the server hit an unexpected error"),
                    release_key=True,
                ),
            )
            PROVISIONING_REQUESTS.labels(request.action, "failed").inc()
            raise
        finish = _finisher(
            record_id,
            result=outcome.result,
            status=outcome.status,
            intercom=outcome.intercom,
            error=None,
        )
        if outcome.store is not None:
            try:
                record = await outcome.store(finish)
            except Exception:
                # Intercom made the change but the store could not record it: the next
                # refresh brings it in; the key stays claimed (the change is done).
                logger.exception("provisioning request %s: storing the change failed", record_id)
                self._request_refresh()
                record = await run_in_threadpool(
                    finish_only,
                    self._db,
                    _finisher(
                        record_id,
                        result="failed",
                        status=500,
                        intercom=outcome.intercom,
                        error=(
                            "store_failed",
                            "Intercom made the change but the store could not record it; "
                            "a refresh was requested",
                        ),
                    ),
                )
                self._log(record, started)
                return Answer(500, record.as_json())
        else:
            record = await run_in_threadpool(finish_only, self._db, finish)
        self._log(record, started)
        return Answer(outcome.status, record.as_json())

    def _replay(self, request: Request, record: records.RequestRecord) -> Answer:
        if record.request_hash != request.request_hash:
            raise Refusal(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request; use a new key",
            )
        if not record.finished or record.http_status is None:
            raise Refusal(
                409,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still in progress; retry later",
                headers={"Retry-After": "1"},
            )
        PROVISIONING_REQUESTS.labels(request.action, "replayed").inc()
        logger.info(
            "provisioning request replayed",
            extra={"provisioning_id": record.id, "action": record.action},
        )
        replayed = {"Idempotent-Replayed": "true"}
        if record.http_status == 400:
            body = {"error": {"code": record.error_code, "message": record.error_message or ""}}
            return Answer(400, body, replayed)
        return Answer(record.http_status, record.as_json(), replayed)

    def _log(self, record: records.RequestRecord, started: float) -> None:
        result = record.result or "failed"
        PROVISIONING_REQUESTS.labels(record.action, result).inc()
        logger.info(
            "provisioning request %s: %s",
            record.action,
            result,
            extra={
                "provisioning_id": record.id,
                "action": record.action,
                "user_id": record.user_id,
                "team_id": record.team_id,
                "dry_run": record.dry_run,
                "result": result,
                "status": record.http_status,
                "requested_by": record.requested_by,
                "intercom_status": record.intercom_status,
                "error_code": record.error_code,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    async def _run(self, request: Request) -> Outcome:
        if request.action == REMOVE_USER:
            return await self._remove_user(request)
        return await self._change_member(request)

    # -- removal ------------------------------------------------------------------------------

    async def _remove_user(self, request: Request) -> Outcome:
        target = request.reassign_to or self._settings.removal_reassign_admin_id
        view = await run_in_threadpool(_read_view, self._db, request.user_id, None, target)
        self._require_synced(view)
        if view.user_active is None:
            raise Refusal(404, "not_found", f"there is no teammate {request.user_id}")
        if not view.user_active:
            return Outcome("already_removed", 200, None)
        if target is None:
            raise Refusal(
                400,
                "reassign_target_required",
                "name who receives the teammate's conversations, messages, articles and "
                "ownerships: the body's reassign_to, or REMOVAL_REASSIGN_ADMIN_ID (0 leaves "
                "them unassigned)",
            )
        if target != "0" and not view.target_active:
            raise Refusal(
                400,
                "reassign_target_invalid",
                f"the reassignment target {target} is not an active teammate",
            )
        await self._refuse_protected(request.user_id, target=target)
        params = {"admin_id": request.user_id, **dict.fromkeys(REASSIGN_PARAMS, target)}
        path = "/admins/remove?" + urlencode(params)
        if request.dry_run:
            return Outcome("would_remove", 200, ("DELETE", path, None, None))
        client = self._client()
        try:
            answer = await intercom_write(
                client,
                "DELETE",
                "/admins/remove",
                params=params,
                endpoint="admins_remove",
                api_version=removal_api_version(self._settings.intercom_api_version),
                budget_seconds=WRITE_BUDGET_SECONDS,
            )
        except IntercomNotFound as exc:
            # Intercom does not know them (or answered 404 for another reason): never store a
            # removal on a guess; the refresh settles what Intercom lists.
            self._request_refresh()
            raise Refusal(
                404,
                "not_found",
                f"Intercom answered 404 ({exc.intercom_code or 'not_found'}) for teammate "
                f"{request.user_id}; nothing was changed and a refresh was requested",
                intercom=("DELETE", path, None, exc.status),
            ) from None
        except IntercomError as exc:
            raise _refusal_for(exc, "DELETE", path, None, removal=True) from None
        finally:
            await client.aclose()
        call = ("DELETE", path, None, answer.status)

        async def store(finish: records.FinishFn) -> records.RequestRecord:
            applied = await run_in_threadpool(
                apply_confirmed_removal,
                self._db,
                request.user_id,
                finish=finish,
                apply_notification=self._apply_notification,
            )
            return applied.record

        return Outcome("removed", 200, call, store)

    # -- team members -------------------------------------------------------------------------

    async def _change_member(self, request: Request) -> Outcome:
        team_id = request.team_id
        assert team_id is not None
        adding = request.action == ADD_TEAM_MEMBER
        view = await run_in_threadpool(_read_view, self._db, request.user_id, team_id, None)
        self._require_synced(view)
        if not view.team_exists:
            raise Refusal(404, "not_found", f"there is no team {team_id}")
        if not view.user_active:
            raise Refusal(404, "not_found", f"there is no active teammate {request.user_id}")
        if not adding:
            await self._refuse_protected(
                request.user_id, target=self._settings.removal_reassign_admin_id
            )
        if request.dry_run:
            return self._dry_member_change(request.user_id, team_id, view.team_member_ids, adding)
        lock = await self._team_lock(team_id)
        try:
            return await self._member_change_locked(request.user_id, team_id, adding)
        finally:
            await run_in_threadpool(lock.release)

    async def _team_lock(self, team_id: str) -> records.TeamLock:
        deadline = time.monotonic() + TEAM_LOCK_WAIT_SECONDS
        while True:
            lock = await run_in_threadpool(records.try_team_lock, self._db, team_id)
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

    def _dry_member_change(
        self, user_id: str, team_id: str, members: list[str], adding: bool
    ) -> Outcome:
        new = self._new_members(user_id, team_id, members, adding, None)
        if new is None:
            return Outcome("unchanged", 200, None)
        body = {"admin_ids": _admin_ids(new)}
        return Outcome(
            "would_add" if adding else "would_remove", 200, ("PUT", f"/teams/{team_id}", body, None)
        )

    def _new_members(
        self,
        user_id: str,
        team_id: str,
        members: list[str],
        adding: bool,
        read_call: records.IntercomCall | None,
    ) -> list[str] | None:
        """The member list to send, or None when nothing is to change."""
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

    async def _member_change_locked(self, user_id: str, team_id: str, adding: bool) -> Outcome:
        client = self._client()
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
                    raise _refusal_for(exc, "GET", path, None, removal=False) from None
                read_call = ("GET", path, None, 200)
                current = list(team.admin_ids)
                new = self._new_members(user_id, team_id, current, adding, read_call)
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
                    raise _refusal_for(exc, "PUT", path, body, removal=False) from None
                confirmed = _confirmed_members(answer.body, new)
                result = "added" if adding else "removed"
                store = self._store_members(team_id, confirmed)
                return Outcome(result, 200, ("PUT", path, body, answer.status), store)
        finally:
            await client.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    def _store_members(
        self, team_id: str, member_ids: list[str]
    ) -> Callable[[records.FinishFn], Awaitable[records.RequestRecord]]:
        async def store(finish: records.FinishFn) -> records.RequestRecord:
            applied = await run_in_threadpool(
                apply_confirmed_members, self._db, team_id, member_ids, finish=finish
            )
            return applied.record

        return store

    # -- shared checks ------------------------------------------------------------------------

    def _require_synced(self, view: StoreView) -> None:
        if not view.synced:
            raise Refusal(
                503,
                "not_synced",
                "no baseline has succeeded yet: the service cannot check the request",
                headers={"Retry-After": "30"},
                transient=True,
            )

    async def _refuse_protected(self, user_id: str, *, target: str | None) -> None:
        if user_id in self._settings.protected_admin_ids:
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
        if user_id == await self._own_teammate():
            raise Refusal(
                409,
                "protected_teammate",
                f"teammate {user_id} is the one Intercom's access token acts as",
            )

    async def _own_teammate(self) -> str:
        if self._own_admin_id is not None:
            return self._own_admin_id
        async with self._own_lock:
            if self._own_admin_id is None:
                client = self._client()
                try:
                    self._own_admin_id = await me_admin_id(client)
                except IntercomError as exc:
                    raise _refusal_for(exc, "GET", "/me", None, removal=False) from None
                finally:
                    await client.aclose()
            return self._own_admin_id

    def _client(self) -> IntercomClient:
        if self._client_factory is None:
            raise Refusal(
                503,
                "intercom_not_configured",
                "INTERCOM_ACCESS_TOKEN is not set: the service cannot call Intercom",
            )
        return self._client_factory()


def _confirmed_members(body: Any, sent: list[str]) -> list[str]:
    """The member list Intercom answered with; what was sent when the answer has none."""
    if isinstance(body, dict) and isinstance(body.get("admin_ids"), list):
        try:
            return list(IntercomTeam.model_validate(body).admin_ids)
        except ValueError:
            return sent
    return sent


def _retry_after(exc: IntercomError) -> str:
    if isinstance(exc, IntercomRateLimited) and exc.reset_at is not None:
        return str(max(1, math.ceil(exc.reset_at - time.time())))
    return str(int(WRITE_BUDGET_SECONDS))


def _refusal_for(
    exc: IntercomError, method: str, path: str, body: dict[str, Any] | None, *, removal: bool
) -> Refusal:
    """Intercom's failure as our answer (spec §10): 401/403 → 502 `intercom_refused` naming
    what is missing; 429/5xx (after the retry budget) → 503 `intercom_unavailable`."""
    call = (method, path, body, exc.status)
    short = path.split("?", 1)[0]
    code = exc.intercom_code or ("unauthorized" if exc.status == 401 else "forbidden")
    if isinstance(exc, IntercomPlanRestricted):
        if method == "PUT":
            what = (
                "Preview team writes (PUT /teams/{id}, under Intercom's managed availability) "
                "are not enabled for this workspace; ask Intercom to enable them"
            )
        else:
            what = "the workspace's Intercom plan does not include this API"
        message = f"Intercom answered {exc.status} {code} to {method} {short}: {what}"
        return Refusal(502, "intercom_refused", message, intercom=call)
    if isinstance(exc, IntercomAuthError):
        if exc.status == 401 or code.startswith("token_") or code == "unauthorized":
            what = "it refused the access token; check INTERCOM_ACCESS_TOKEN"
        elif removal:
            what = (
                "the app's access token lacks the remove_admins scope (Developer Hub > "
                "your app > Authentication: the permission to remove teammates)"
            )
        elif method == "PUT":
            what = "the teammate who authorized the app lacks the permission to manage teams"
        else:
            what = "the app's access token lacks the permission to read teammates and teams"
        message = f"Intercom answered {exc.status} {code} to {method} {short}: {what}"
        return Refusal(502, "intercom_refused", message, intercom=call)
    if isinstance(exc, IntercomRateLimited | IntercomUnavailable) or exc.code in (
        "intercom_bad_response",
    ):
        return Refusal(
            503,
            "intercom_unavailable",
            f"Intercom did not answer {method} {short} within {int(WRITE_BUDGET_SECONDS)} s of "
            f"retries ({exc.status or 'no status'}); nothing was changed, try again",
            intercom=call,
            headers={"Retry-After": _retry_after(exc)},
            transient=True,
        )
    return Refusal(
        502,
        "intercom_error",
        f"Intercom answered {exc.status} ({exc.intercom_code or 'error'}) to {method} {short}; "
        "nothing was changed",
        intercom=call,
    )


@dataclass
class _Finisher:
    """Closes one record inside a store transaction (`records.FinishFn`)."""

    record_id: int
    result: str
    status: int
    intercom: records.IntercomCall | None
    error: tuple[str, str] | None
    release_key: bool = False

    def __call__(self, session: Session) -> records.RequestRecord:
        return records.finish_request(
            session,
            self.record_id,
            result=self.result,
            http_status=self.status,
            intercom=self.intercom,
            error=self.error,
            release_key=self.release_key,
        )


def _finisher(
    record_id: int,
    *,
    result: str,
    status: int,
    intercom: records.IntercomCall | None,
    error: tuple[str, str] | None,
    release_key: bool = False,
) -> _Finisher:
    return _Finisher(record_id, result, status, intercom, error, release_key)
