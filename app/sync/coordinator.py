"""Runs baselines: single-flight across processes, on a jittered schedule, at start-up, on an
operator's request and, debounced, when webhooks say teams or roles changed.

Any process may queue a run (the store's active-run slot keeps it to one); the process that
queued it executes it, heartbeating so that a crash frees the slot after the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from app.intercom.client import IntercomAuthError, IntercomClient, IntercomError
from app.logging_setup import run_id_var
from app.metrics import SYNC_DURATION, SYNC_RUNS
from app.settings import Settings
from app.store import sync_runs
from app.store.engine import Database
from app.store.models import utcnow
from app.store.sync_runs import RunView
from app.store.versioning import current_version, read_store_state
from app.sync.baseline import (
    FetchedWorkspace,
    MassRemovalBlocked,
    apply_baseline,
    fetch_workspace,
)

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
ProgressCallback = Callable[[str], None]


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class SyncCoordinator:
    """One per process. Call `start()` from the app's lifespan and `stop()` on shutdown."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client_factory: Callable[[], IntercomClient] | None,
        *,
        on_version_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._client_factory = client_factory
        self._owner = process_owner()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_requested_at = 0.0
        self._stopping = False
        self._on_version_change = on_version_change

    # ----- requests -------------------------------------------------------------------------

    async def request_run(self, trigger: str, *, force: bool = False) -> tuple[RunView, bool]:
        """Queue a run (or return the one already queued or running) and execute it here."""
        run, created = await run_in_threadpool(
            sync_runs.enqueue_run, self._db, trigger=trigger, force=force, owner=self._owner
        )
        if created:
            self._spawn(self.execute(run.id, force=force, trigger=trigger))
        return run, created

    def request_refresh(self) -> None:
        """A webhook says teams, seats or roles changed: refetch soon, once per burst."""
        self._refresh_requested_at = time.monotonic()
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._debounced_refresh())

    async def _debounced_refresh(self) -> None:
        debounce = self._settings.webhook_refresh_debounce_seconds
        first = time.monotonic()
        # Wait for a quiet window, but no longer than five windows in a steady stream.
        while not self._stopping:
            quiet_for = time.monotonic() - self._refresh_requested_at
            if quiet_for >= debounce or time.monotonic() - first >= 5 * debounce:
                break
            await asyncio.sleep(debounce - quiet_for)
        while not self._stopping:
            run, created = await self.request_run("webhook")
            if created or run.status == "queued":
                return  # that run fetches after the request, so it sees the change
            # A run already fetching may have read Intercom before the change: refetch after it.
            await self._wait_for(run.id)

    async def _wait_for(self, run_id: int) -> None:
        while not self._stopping:
            with self._db.reading() as session:
                run = sync_runs.get_run(session, run_id)
            if run is None or run.finished_at is not None:
                return
            await asyncio.sleep(0.2)

    # ----- execution ------------------------------------------------------------------------

    async def execute(
        self, run_id: int, *, force: bool, trigger: str, progress: ProgressCallback | None = None
    ) -> RunView:
        """Run a queued baseline to completion and record its outcome."""
        token = run_id_var.set(str(run_id))
        started = time.monotonic()
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(run_id))
        try:
            view = await self._execute(run_id, force=force, progress=progress)
        finally:
            heartbeat.cancel()
            run_id_var.reset(token)
        SYNC_RUNS.labels(trigger, view.status).inc()
        SYNC_DURATION.labels(view.status).observe(time.monotonic() - started)
        return view

    async def _execute(
        self, run_id: int, *, force: bool, progress: ProgressCallback | None
    ) -> RunView:
        say = progress or (lambda _message: None)
        version_before = await run_in_threadpool(self._current_version)
        await run_in_threadpool(
            sync_runs.start_run, self._db, run_id, version_before=version_before
        )
        logger.info("sync run %s started", run_id)
        if self._client_factory is None:
            return await self._finish(
                run_id,
                "failed",
                error=(
                    "intercom_not_configured",
                    "INTERCOM_ACCESS_TOKEN is not set, so nothing can be fetched from Intercom",
                ),
            )
        try:
            say("fetching workspace, teammates and teams from Intercom")
            client = self._client_factory()
            try:
                fetched = await fetch_workspace(
                    client, roles_supported=self._settings.roles_supported
                )
            finally:
                await client.aclose()
            say(f"fetched {len(fetched.admins)} teammates and {len(fetched.teams)} teams")
            if (
                self._settings.intercom_workspace_id
                and fetched.workspace.id_code != self._settings.intercom_workspace_id
            ):
                return await self._finish(
                    run_id,
                    "failed",
                    error=(
                        "workspace_mismatch",
                        f"the token belongs to workspace {fetched.workspace.id_code}, not "
                        f"INTERCOM_WORKSPACE_ID={self._settings.intercom_workspace_id}",
                    ),
                )
            say("applying the difference to the store")
            view = await run_in_threadpool(self._apply, run_id, fetched, force)
        except IntercomAuthError as exc:
            logger.error("sync run %s: Intercom refused the access token: %s", run_id, exc)
            return await self._finish(run_id, "failed", error=(exc.code, exc.message))
        except IntercomError as exc:
            logger.error("sync run %s failed: %s", run_id, exc)
            return await self._finish(run_id, "failed", error=(exc.code, exc.message))
        except MassRemovalBlocked as exc:
            logger.warning("sync run %s blocked: %s", run_id, exc.message)
            return await self._finish(run_id, "blocked", error=(exc.code, exc.message))
        except Exception as exc:
            logger.exception("sync run %s failed unexpectedly", run_id)
            return await self._finish(
                run_id, "failed", error=("internal_error", f"{type(exc).__name__}: {exc}")
            )
        say(f"done: {view.stats}")
        if self._on_version_change is not None:
            await self._on_version_change()
        return view

    def _apply(self, run_id: int, fetched: FetchedWorkspace, force: bool) -> RunView:
        with self._db.writing() as session:
            result = apply_baseline(
                session,
                fetched,
                force=force,
                max_removal_fraction=self._settings.max_removal_fraction,
            )
            state = read_store_state(session)
            state.last_sync_at = utcnow()
            view = sync_runs.finish_run(
                session,
                run_id,
                status="succeeded",
                stats=result.stats.as_dict(),
                version_after=result.version_after,
            )
        logger.info(
            "sync run %s succeeded: version %s -> %s, %s",
            run_id,
            result.version_before,
            result.version_after,
            result.stats.as_dict(),
        )
        return view

    async def _finish(self, run_id: int, status: str, *, error: tuple[str, str]) -> RunView:
        def finish() -> RunView:
            with self._db.writing() as session:
                return sync_runs.finish_run(
                    session, run_id, status=status, error_code=error[0], error_message=error[1]
                )

        return await run_in_threadpool(finish)

    def _current_version(self) -> int:
        with self._db.reading() as session:
            return current_version(session)

    async def _heartbeat(self, run_id: int) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await run_in_threadpool(sync_runs.heartbeat, self._db, run_id)
            except Exception:
                logger.warning("could not heartbeat sync run %s", run_id, exc_info=True)

    # ----- schedule -------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping = True
        for task in (self._scheduler, self._refresh_task):
            if task is not None:
                task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()

    def _spawn(self, coroutine: Awaitable[object]) -> None:
        async def wrapper() -> None:
            await coroutine

        task = asyncio.get_running_loop().create_task(wrapper())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _due(self, trigger: str) -> bool:
        interval = self._settings.reconcile_interval_seconds
        with self._db.reading() as session:
            state = read_store_state(session)
            last_queued = sync_runs.latest_started_at(session)
        now = utcnow()
        if state.last_sync_at is None:
            if trigger == "startup":
                return True
            # Never synced: retry, but no more often than every minute (or the interval).
            return last_queued is None or now - last_queued > timedelta(
                seconds=min(60.0, interval or 60.0)
            )
        if interval <= 0:
            return False
        if now - state.last_sync_at < timedelta(seconds=interval):
            return False
        # Another replica may have fired this period already.
        return last_queued is None or now - last_queued >= timedelta(seconds=interval / 2)

    async def _schedule(self) -> None:
        interval = self._settings.reconcile_interval_seconds
        try:
            if self._settings.sync_on_startup and await run_in_threadpool(self._due, "startup"):
                await self.request_run("startup")
            if interval <= 0:
                return
            while not self._stopping:
                await asyncio.sleep(interval * random.uniform(0.9, 1.1) / 2)
                try:
                    if await run_in_threadpool(self._due, "schedule"):
                        await self.request_run("schedule")
                except Exception:
                    logger.warning("reconcile schedule check failed", exc_info=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the reconcile scheduler stopped")
