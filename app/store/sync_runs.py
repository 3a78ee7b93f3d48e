"""Sync-run records. At most one run is queued or running across every process: the row's
`active` column is 1 only then, under a unique constraint. A run whose owner stops
heartbeating (a crashed process) is marked failed after the lease, which frees the slot, and
one whose owner's run lock is free (app.store.locks) is marked failed at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.observability.logs import scrub
from app.store.locks import lock_enqueue, run_lock_is_free
from app.store.models import SyncRun, utcnow

logger = logging.getLogger(__name__)

RUN_LEASE = timedelta(seconds=60)


class RunStatus(StrEnum):
    """A run's status, as stored and served. Queued and running runs hold the active slot."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"  # the mass-removal brake held: nothing was applied


class RunTrigger(StrEnum):
    """What queued a run, as stored and served."""

    STARTUP = "startup"
    SCHEDULE = "schedule"  # the reconcile schedule
    OPERATOR = "operator"  # POST /resync
    WEBHOOK = "webhook"  # a refresh that webhooks asked for
    CLI = "cli"  # intercom-sync sync


# The error code of a run released by a process that stopped before it finished (its status
# is failed); a start-up redoes such a run.
INTERRUPTED = "interrupted"
ABANDONED = "run_abandoned"
_ABANDONED_MESSAGE = "the process running this sync stopped before it finished"


@dataclass(frozen=True)
class RunView:
    """A run as the API shows it."""

    id: int
    trigger: RunTrigger
    status: RunStatus
    force: bool
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stats: dict[str, int]
    error_code: str | None
    error_message: str | None
    # Structured detail of the error, e.g. a blocked run's {"would_remove": [...]}.
    error_details: dict[str, Any] | None = None
    # Items the run could not store and left as they were.
    warnings: tuple[dict[str, str], ...] = ()


EMPTY_STATS = {
    "users_added": 0,
    "users_updated": 0,
    "users_removed": 0,
    "teams_added": 0,
    "teams_updated": 0,
    "teams_removed": 0,
    "memberships_added": 0,
    "memberships_removed": 0,
}


def _view(run: SyncRun) -> RunView:
    return RunView(
        id=run.id,
        trigger=RunTrigger(run.trigger),
        status=RunStatus(run.status),
        force=run.force,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        stats={**EMPTY_STATS, **(run.stats or {})},
        error_code=run.error_code,
        error_message=run.error_message,
        error_details=run.error_details,
        warnings=tuple(run.warnings or ()),
    )


def _active_run(session: Session) -> SyncRun | None:
    return session.execute(select(SyncRun).where(SyncRun.active.is_(True))).scalar_one_or_none()


def expire_abandoned_runs(session: Session, *, now: datetime | None = None) -> int:
    """Fail runs whose owner stopped heartbeating, or whose owner's run lock is gone (it died);
    returns how many."""
    abandoned = 0
    running = _active_run(session)
    # A run is marked running only after its owner took the run lock, and the owner closes
    # the run before it lets go: a running run with a free lock has lost its owner.
    if running is not None and running.status == RunStatus.RUNNING and run_lock_is_free(session):
        logger.warning(
            "sync run %s lost its owner %s (its run lock is free): marking it failed",
            running.id,
            running.owner,
        )
        running.status = RunStatus.FAILED
        running.active = None
        running.finished_at = now or utcnow()
        running.error_code = ABANDONED
        running.error_message = _ABANDONED_MESSAGE
        session.flush()
        abandoned += 1
    cutoff = (now or utcnow()) - RUN_LEASE
    result = session.execute(
        update(SyncRun)
        .where(SyncRun.active.is_(True))
        .where(
            ((SyncRun.heartbeat_at.is_not(None)) & (SyncRun.heartbeat_at < cutoff))
            | ((SyncRun.heartbeat_at.is_(None)) & (SyncRun.queued_at < cutoff))
        )
        .values(
            status=RunStatus.FAILED,
            active=None,
            finished_at=now or utcnow(),
            error_code=ABANDONED,
            error_message=_ABANDONED_MESSAGE,
        )
    )
    return abandoned + int(result.rowcount or 0)  # type: ignore[attr-defined]


def _enqueue(
    session: Session,
    *,
    trigger: RunTrigger,
    force: bool,
    owner: str,
    only_if: Callable[[Session], bool] | None,
) -> tuple[RunView | None, bool]:
    lock_enqueue(session)
    expire_abandoned_runs(session)
    existing = _active_run(session)
    if existing is not None:
        return _view(existing), False
    if only_if is not None and not only_if(session):
        return None, False
    now = utcnow()
    run = SyncRun(
        trigger=trigger,
        status=RunStatus.QUEUED,
        force=force,
        active=True,
        owner=owner,
        queued_at=now,
        heartbeat_at=now,
        stats=None,
    )
    session.add(run)
    session.flush()
    return _view(run), True


# Queuing is meant to be the whole of a write transaction. Should another process queue a run
# between this one's read of the active slot and its insert, the slot's unique constraint
# refuses the insert with IntegrityError; the caller then tries again in a new transaction,
# which returns that run.
def enqueue_run(
    session: Session, *, trigger: RunTrigger, force: bool, owner: str
) -> tuple[RunView, bool]:
    """Queue a run unless one is queued or running; returns (run, created)."""
    run, created = _enqueue(session, trigger=trigger, force=force, owner=owner, only_if=None)
    assert run is not None  # without a condition there is always a run to return
    return run, created


def enqueue_run_if_due(
    session: Session, *, trigger: RunTrigger, owner: str, is_due: Callable[[Session], bool]
) -> RunView | None:
    """Queue a run when no run is active and `is_due(session)` holds, deciding and queuing in
    one serialized transaction so that two replicas checking the schedule at the same moment
    queue one run between them. Returns the new run, or None."""
    run, created = _enqueue(session, trigger=trigger, force=False, owner=owner, only_if=is_due)
    return run if created else None


def start_run(session: Session, run_id: int, *, version_before: int | None = None) -> RunView:
    run = session.get_one(SyncRun, run_id)
    now = utcnow()
    run.status = RunStatus.RUNNING
    run.started_at = now
    run.heartbeat_at = now
    run.version_before = version_before
    return _view(run)


def heartbeat(session: Session, run_id: int) -> None:
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.active.is_(True))
        .values(heartbeat_at=utcnow())
    )


def release_run(session: Session, run_id: int, *, message: str) -> bool:
    """Close a run this process can no longer finish (it is shutting down), unless it has
    finished already; frees the active slot for another replica. True when it was released."""
    result = session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.active.is_(True))
        .values(
            status=RunStatus.FAILED,
            active=None,
            finished_at=utcnow(),
            error_code=INTERRUPTED,
            error_message=scrub(message),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: RunStatus,
    stats: dict[str, int] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    error_details: dict[str, Any] | None = None,
    version_after: int | None = None,
    warnings: list[dict[str, str]] | None = None,
) -> RunView:
    """Close a run inside the caller's transaction (so a successful apply and its run record
    commit together)."""
    run = session.get_one(SyncRun, run_id)
    run.status = status
    run.active = None
    run.finished_at = utcnow()
    run.stats = stats if stats is not None else run.stats
    run.error_code = error_code
    # The one place a run's message is written: no secret reaches /sync-runs through it.
    run.error_message = scrub(error_message) if error_message is not None else None
    run.error_details = error_details
    run.version_after = version_after
    if warnings:
        run.warnings = warnings
    session.flush()
    return _view(run)


def get_run(session: Session, run_id: int) -> RunView | None:
    run = session.get(SyncRun, run_id)
    return _view(run) if run is not None else None


def list_runs(session: Session, *, limit: int) -> list[RunView]:
    runs = session.execute(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)).scalars()
    return [_view(run) for run in runs]


def latest_finished_run(session: Session) -> RunView | None:
    run = session.execute(
        select(SyncRun).where(SyncRun.finished_at.is_not(None)).order_by(SyncRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    return _view(run) if run is not None else None


def latest_started_at(session: Session) -> datetime | None:
    run = session.execute(
        select(SyncRun.queued_at).order_by(SyncRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    return run


def latest_run(session: Session) -> RunView | None:
    run = session.execute(select(SyncRun).order_by(SyncRun.id.desc()).limit(1)).scalar_one_or_none()
    return _view(run) if run is not None else None


def fetches_after(run: RunView | None, since: datetime) -> bool:
    """Whether `run` (the latest run) was queued at or after `since` and has not failed or
    been blocked: it reads, or read, Intercom after `since`, and what it read is (or will be)
    in the store."""
    return (
        run is not None
        and run.queued_at >= since
        and run.status not in (RunStatus.FAILED, RunStatus.BLOCKED)
    )
