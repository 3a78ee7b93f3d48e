"""Sync-run records. At most one run is queued or running across every process: the row's
`active` column is 1 only then, under a unique constraint. A run whose owner stops
heartbeating (a crashed process) is marked failed after the lease, which frees the slot.

On PostgreSQL two advisory locks add to that. Queuing takes a transaction-scoped lock, so
"is a run due?" and "queue it" are one step across replicas. The process executing a run holds
a session lock on a dedicated connection (`acquire_run_lock`); PostgreSQL drops it the moment
that process dies, so a running run whose lock is free is known abandoned at once instead of
after the lease. On SQLite the run lock is an exclusive `flock` on a file beside the database
(`<database>.sync-lock`), which the operating system likewise drops when its process dies."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.observability.logs import scrub
from app.store.engine import Database
from app.store.models import SyncRun, utcnow

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")
RUN_LEASE = timedelta(seconds=60)
# PostgreSQL advisory lock keys (migrations/env.py uses 0x1C5_0001 for migrations).
RUN_LOCK_KEY = 0x1C5_0002
ENQUEUE_LOCK_KEY = 0x1C5_0003
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class RunView:
    """A run as the API shows it (spec §3.2)."""

    id: int
    trigger: str
    status: str
    force: bool
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stats: dict[str, int]
    error_code: str | None
    error_message: str | None
    # Structured detail of the error, e.g. a blocked run's {"would_remove": [...]}.
    error_details: dict[str, Any] | None = None
    # Items the run could not store and left as they were (spec §9).
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
        trigger=run.trigger,
        status=run.status,
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


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def expire_abandoned_runs(session: Session, *, now: datetime | None = None) -> int:
    """Fail runs whose owner stopped heartbeating, or whose owner's run lock is gone (it died);
    returns how many."""
    abandoned = 0
    running = _active_run(session)
    # A run is marked running only after its owner took the run lock, and the owner closes
    # the run before it lets go: a running run with a free lock has lost its owner.
    if running is not None and running.status == "running" and _run_lock_is_free(session):
        logger.warning(
            "sync run %s lost its owner %s (its run lock is free): marking it failed",
            running.id,
            running.owner,
        )
        running.status = "failed"
        running.active = None
        running.finished_at = now or utcnow()
        running.error_code = "run_abandoned"
        running.error_message = "the process running this sync stopped before it finished"
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
            status="failed",
            active=None,
            finished_at=now or utcnow(),
            error_code="run_abandoned",
            error_message="the process running this sync stopped before it finished",
        )
    )
    return abandoned + int(result.rowcount or 0)  # type: ignore[attr-defined]


def _run_lock_is_free(session: Session) -> bool:
    if _is_postgresql(session):
        # Transaction-scoped, so it is gone again when this transaction ends.
        return bool(session.execute(select(func.pg_try_advisory_xact_lock(RUN_LOCK_KEY))).scalar())
    path = _sqlite_lock_path(session.get_bind().engine.url.database)
    if path is None:
        return False  # no file to lock (an in-memory store): only the lease applies
    fd = _try_file_lock(path)
    if fd is None:
        return False
    os.close(fd)  # closing the descriptor drops the lock at once
    return True


def _sqlite_lock_path(database: str | None) -> str | None:
    if sys.platform == "win32" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return f"{database}.sync-lock"


def _try_file_lock(path: str) -> int | None:
    """A descriptor holding an exclusive lock on `path`, or None if another holds it.

    `flock` locks belong to the open file description, so a second open in the same process
    conflicts too, and the kernel drops the lock when its process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_enqueue(session: Session) -> None:
    """Serialize queuing across replicas (SQLite's BEGIN IMMEDIATE already does)."""
    if _is_postgresql(session):
        session.execute(select(func.pg_advisory_xact_lock(ENQUEUE_LOCK_KEY)))


def _enqueue(
    db: Database,
    *,
    trigger: str,
    force: bool,
    owner: str,
    only_if: Callable[[Session], bool] | None,
) -> tuple[RunView | None, bool]:
    for _ in range(5):
        try:
            with db.writing() as session:
                _lock_enqueue(session)
                expire_abandoned_runs(session)
                existing = _active_run(session)
                if existing is not None:
                    return _view(existing), False
                if only_if is not None and not only_if(session):
                    return None, False
                now = utcnow()
                run = SyncRun(
                    trigger=trigger,
                    status="queued",
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
        except IntegrityError:
            # Another process queued one between our read and our insert: return theirs.
            continue
    raise RuntimeError("could not queue a sync run: the active-run slot kept changing")


def enqueue_run(db: Database, *, trigger: str, force: bool, owner: str) -> tuple[RunView, bool]:
    """Queue a run unless one is queued or running; returns (run, created)."""
    run, created = _enqueue(db, trigger=trigger, force=force, owner=owner, only_if=None)
    assert run is not None  # without a condition there is always a run to return
    return run, created


def enqueue_run_if_due(
    db: Database, *, trigger: str, owner: str, is_due: Callable[[Session], bool]
) -> RunView | None:
    """Queue a run when no run is active and `is_due(session)` holds, deciding and queuing in
    one serialized transaction so that two replicas checking the schedule at the same moment
    queue one run between them. Returns the new run, or None."""
    run, created = _enqueue(db, trigger=trigger, force=False, owner=owner, only_if=is_due)
    return run if created else None


def start_run(db: Database, run_id: int, *, version_before: int | None = None) -> RunView:
    with db.writing() as session:
        run = session.get_one(SyncRun, run_id)
        now = utcnow()
        run.status = "running"
        run.started_at = now
        run.heartbeat_at = now
        run.version_before = version_before
        return _view(run)


def heartbeat(db: Database, run_id: int) -> None:
    with db.writing() as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id, SyncRun.active.is_(True))
            .values(heartbeat_at=utcnow())
        )


def release_run(db: Database, run_id: int, *, message: str) -> bool:
    """Close a run this process can no longer finish (it is shutting down), unless it has
    finished already; frees the active slot for another replica. True when it was released."""
    with db.writing() as session:
        result = session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id, SyncRun.active.is_(True))
            .values(
                status="failed",
                active=None,
                finished_at=utcnow(),
                error_code=INTERRUPTED,
                error_message=scrub(message),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class RunLock:
    """The lock held while a run executes: a PostgreSQL session lock, or on SQLite a file lock
    (none for an in-memory store). Release it after the run is closed."""

    def __init__(self, connection: Connection | None, fd: int | None = None) -> None:
        self._connection = connection
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(select(func.pg_advisory_unlock(RUN_LOCK_KEY)))
        except Exception:
            # Never hand a connection that may still hold the lock back to the pool.
            logger.warning("could not release the sync run lock; dropping its connection")
            connection.invalidate()
        finally:
            connection.close()


def acquire_run_lock(db: Database, *, wait_seconds: float = 5.0) -> RunLock | None:
    """Take the run lock, waiting up to `wait_seconds`; None if another process holds it
    (one still running a sync whose slot expired, e.g. after a long stall)."""
    if db.is_sqlite:
        path = _sqlite_lock_path(db.engine.url.database)
        if path is None:
            return RunLock(None)
        deadline = time.monotonic() + wait_seconds
        while (fd := _try_file_lock(path)) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        return RunLock(None, fd)
    connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            if connection.execute(select(func.pg_try_advisory_lock(RUN_LOCK_KEY))).scalar():
                return RunLock(connection)
            if time.monotonic() >= deadline:
                connection.close()
                return None
            # Enqueue transactions hold it for a moment while checking for abandoned runs.
            time.sleep(0.1)
    except BaseException:
        connection.invalidate()
        connection.close()
        raise


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
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
    return run is not None and run.queued_at >= since and run.status not in ("failed", "blocked")
