"""Sync-run records. At most one run is queued or running across every process: the row's
`active` column is 1 only then, under a unique constraint. A run whose owner stops
heartbeating (a crashed process) is marked failed after the lease, which frees the slot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store.engine import Database
from app.store.models import SyncRun, utcnow

ACTIVE_STATUSES = ("queued", "running")
RUN_LEASE = timedelta(seconds=60)


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

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "status": self.status,
            "force": self.force,
            "queued_at": _iso(self.queued_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "stats": self.stats,
            "error": (
                {"code": self.error_code, "message": self.error_message or ""}
                if self.error_code
                else None
            ),
        }


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


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


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
    )


def _active_run(session: Session) -> SyncRun | None:
    return session.execute(select(SyncRun).where(SyncRun.active.is_(True))).scalar_one_or_none()


def expire_abandoned_runs(session: Session, *, now: datetime | None = None) -> int:
    """Fail runs whose owner stopped heartbeating; returns how many."""
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
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def enqueue_run(db: Database, *, trigger: str, force: bool, owner: str) -> tuple[RunView, bool]:
    """Queue a run unless one is queued or running; returns (run, created)."""
    for _ in range(5):
        try:
            with db.writing() as session:
                expire_abandoned_runs(session)
                existing = _active_run(session)
                if existing is not None:
                    return _view(existing), False
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


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    stats: dict[str, int] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    version_after: int | None = None,
) -> RunView:
    """Close a run inside the caller's transaction (so a successful apply and its run record
    commit together)."""
    run = session.get_one(SyncRun, run_id)
    run.status = status
    run.active = None
    run.finished_at = utcnow()
    run.stats = stats if stats is not None else run.stats
    run.error_code = error_code
    run.error_message = error_message
    run.version_after = version_after
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
