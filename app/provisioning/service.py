"""The provisioning requests: remove a teammate from the workspace, add one to a
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

This module is the frame every request runs in: the record, the replay of a repeated key, the
finish and the log line. The steps live beside it: the checks in guard_rails.py, the two
changes in removal.py and team_members.py, the client and Intercom's failures as our answers
in intercom_calls.py, the request's terms in request.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.intercom.client import IntercomClient
from app.observability.metrics import PROVISIONING_REQUESTS
from app.provisioning.intercom_calls import IntercomCalls
from app.provisioning.removal import TeammateRemoval
from app.provisioning.request import REMOVE_USER, Answer, Outcome, Refusal, Request
from app.provisioning.store_apply import NotificationApplier, finish_only
from app.provisioning.team_members import TeamMemberChange
from app.settings import Settings
from app.store import provisioning as records
from app.store.engine import Database

logger = logging.getLogger(__name__)


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
        self._request_refresh = request_refresh
        intercom = IntercomCalls(client_factory)
        self._removal = TeammateRemoval(
            db,
            settings,
            intercom,
            request_refresh=request_refresh,
            apply_notification=apply_notification,
        )
        self._team_member_change = TeamMemberChange(
            db, settings, intercom, request_refresh=request_refresh
        )

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
                error = (refusal.code, refusal.message)
                return Answer(refusal.status, error=error, headers=refusal.headers)
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
                error = (refusal.code, refusal.message)
                return Answer(400, error=error, headers=refusal.headers)
            return Answer(refusal.status, record, headers=refusal.headers)
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
                return Answer(500, record)
        else:
            record = await run_in_threadpool(finish_only, self._db, finish)
        self._log(record, started)
        return Answer(outcome.status, record)

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
            error = (record.error_code or "", record.error_message or "")
            return Answer(400, error=error, headers=replayed)
        return Answer(record.http_status, record, headers=replayed)

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
            return await self._removal.run(request)
        return await self._team_member_change.run(request)


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
