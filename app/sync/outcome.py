"""A run's outcome in the store: the baseline applied and the run recorded as succeeded in one
transaction, or the run recorded as failed or blocked; each with the one log line that says so.

It lives apart from the coordinator, which decides where and when a run executes (the run
lock, the heartbeat, shutdown): this module is what a run leaves behind, in the store and in
the log.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from app.settings import Settings
from app.store import sync_runs
from app.store.engine import Database
from app.store.models import utcnow
from app.store.sync_runs import RunStatus, RunView
from app.store.versioning import read_store_state
from app.sync.baseline import FetchedWorkspace, apply_baseline

logger = logging.getLogger(__name__)


def apply_and_record(
    db: Database, settings: Settings, run_id: int, fetched: FetchedWorkspace, force: bool
) -> RunView:
    """Apply `fetched` and record run `run_id` as succeeded, in one transaction: a run is
    recorded as succeeded exactly when what it fetched was applied. Blocking; raises what
    `apply_baseline` raises, with nothing written."""
    with db.writing() as session:
        result = apply_baseline(
            session,
            fetched,
            force=force,
            max_removal_fraction=settings.max_removal_fraction,
            keep_ghost_tombstones_for=timedelta(days=settings.webhook_retention_days),
        )
        state = read_store_state(session)
        state.last_sync_at = utcnow()
        view = sync_runs.finish_run(
            session,
            run_id,
            status=RunStatus.SUCCEEDED,
            stats=result.stats.as_dict(),
            version_after=result.version_after,
            warnings=result.warnings,
        )
    # Fields rather than a dict's repr, so that a JSON log can be queried by them.
    logger.info(
        "sync run %s succeeded: version %s -> %s, %d warnings",
        run_id,
        result.version_before,
        result.version_after,
        len(result.warnings),
        extra={
            "sync_status": RunStatus.SUCCEEDED,
            "version_before": result.version_before,
            "version_after": result.version_after,
            **result.stats.as_dict(),
            "warnings": len(result.warnings),
        },
    )
    return view


def record_failure(
    db: Database,
    run_id: int,
    status: RunStatus,
    *,
    error: tuple[str, str],
    details: dict[str, Any] | None = None,
    exc_info: BaseException | None = None,
) -> RunView:
    """Record a run that did not succeed, and say so in one warning with its code (a
    start-up sync that fails has nobody watching but the log). Blocking."""
    logger.warning(
        "sync run %s %s: %s: %s",
        run_id,
        status,
        *error,
        extra={"sync_status": status, "error_code": error[0]},
        exc_info=exc_info,
    )
    with db.writing() as session:
        return sync_runs.finish_run(
            session,
            run_id,
            status=status,
            error_code=error[0],
            error_message=error[1],
            error_details=details,
        )
