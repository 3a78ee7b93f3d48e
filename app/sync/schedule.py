"""When a reconcile is due: the start-up run and the periodic, jittered reconcile loop.

It lives apart from the coordinator, which runs and serializes runs whoever asks for them: this
module only decides when to ask. Replicas share the store, so every decision is read from it
(the last successful sync, the last run queued anywhere) rather than from a local timer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.settings import Settings
from app.store import sync_runs
from app.store.engine import Database
from app.store.models import utcnow
from app.store.sync_runs import RunTrigger, RunView
from app.store.versioning import read_store_state

logger = logging.getLogger(__name__)

RECONCILE_JITTER = 0.1  # a reconcile period is the configured interval ± 10 %


class SpawnsRuns(Protocol):
    """The coordinator's way in: queue through `enqueue`, and execute a run it created."""

    async def __call__(
        self,
        enqueue: Callable[[Session], tuple[RunView | None, bool]],
        *,
        trigger: RunTrigger,
        force: bool,
    ) -> tuple[RunView | None, bool]: ...


class ReconcileSchedule:
    """One per coordinator: `run()` is its scheduler task, cancelled when it stops."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        owner: str,
        enqueue_and_spawn: SpawnsRuns,
        stopping: Callable[[], bool],
    ) -> None:
        self._db = db
        self._settings = settings
        self._owner = owner
        self._enqueue_and_spawn = enqueue_and_spawn
        self._stopping = stopping

    def _is_due(self, session: Session, trigger: RunTrigger, period: float) -> bool:
        interval = self._settings.reconcile_interval_seconds
        state = read_store_state(session)
        last = sync_runs.latest_run(session)
        last_queued = sync_runs.latest_started_at(session)
        now = utcnow()
        if state.last_sync_at is None:
            if trigger == RunTrigger.STARTUP:
                return True
            # Never synced: retry, but no more often than every minute (or the interval).
            return last_queued is None or now - last_queued > timedelta(
                seconds=min(60.0, interval or 60.0)
            )
        if (
            trigger == RunTrigger.STARTUP
            and last is not None
            and last.error_code == sync_runs.INTERRUPTED
        ):
            return True  # a restart cut the last run short: redo it
        if interval <= 0:
            return False
        return seconds_until_reconcile(state.last_sync_at, last_queued, now, period, interval) == 0

    def _seconds_until_due(self, period: float) -> float:
        with self._db.reading() as session:
            state = read_store_state(session)
            last_queued = sync_runs.latest_started_at(session)
        interval = self._settings.reconcile_interval_seconds
        if state.last_sync_at is None:
            return min(60.0, interval)
        return seconds_until_reconcile(state.last_sync_at, last_queued, utcnow(), period, interval)

    async def _request_if_due(self, trigger: RunTrigger, period: float) -> None:
        """Queue (and execute here) a `trigger` run if one is due; the check and the queuing
        are one serialized transaction, so replicas checking together queue one run."""

        def enqueue(session: Session) -> tuple[RunView | None, bool]:
            run = sync_runs.enqueue_run_if_due(
                session,
                trigger=trigger,
                owner=self._owner,
                is_due=lambda session: self._is_due(session, trigger, period),
            )
            return run, run is not None

        await self._enqueue_and_spawn(enqueue, trigger=trigger, force=False)

    async def run(self) -> None:
        interval = self._settings.reconcile_interval_seconds
        try:
            if self._settings.sync_on_startup:
                await self._request_if_due(RunTrigger.STARTUP, interval)
            if interval <= 0:
                return
            while not self._stopping():
                # A period is drawn for each wait; waking at least once per interval re-reads
                # what other replicas (and webhook or operator runs) did meanwhile.
                period = reconcile_period(interval)
                try:
                    delay = await run_in_threadpool(self._seconds_until_due, period)
                except Exception:
                    logger.warning("reconcile schedule check failed", exc_info=True)
                    delay = min(60.0, interval)
                # The floor keeps a run that outlives half an interval from being polled for
                # in a tight loop; it makes a reconcile at most a second late.
                await asyncio.sleep(min(max(delay, min(1.0, interval / 20)), interval))
                try:
                    await self._request_if_due(RunTrigger.SCHEDULE, period)
                except Exception:
                    logger.warning("reconcile schedule check failed", exc_info=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the reconcile scheduler stopped")


def reconcile_period(interval: float, rng: random.Random | None = None) -> float:
    """One reconcile period: RECONCILE_INTERVAL_SECONDS ± RECONCILE_JITTER, so that replicas
    (and many deployments against one Intercom app) do not all sync at the same moment."""
    return interval * (1 + (rng or random).uniform(-RECONCILE_JITTER, RECONCILE_JITTER))


def seconds_until_reconcile(
    last_sync_at: datetime,
    last_queued_at: datetime | None,
    now: datetime,
    period: float,
    interval: float,
) -> float:
    """How long until the next reconcile is due: one `period` after the last successful sync,
    but never within half an interval of the last run queued anywhere (another replica's
    reconcile, or one that failed and is retried at that pace). 0 when it is due now."""
    due = last_sync_at + timedelta(seconds=period)
    if last_queued_at is not None:
        due = max(due, last_queued_at + timedelta(seconds=interval / 2))
    return max(0.0, (due - now).total_seconds())
