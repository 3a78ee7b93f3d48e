"""Runs baselines, single-flight across processes, whoever asks: the schedule (at start-up and
on a jittered period, `app.sync.schedule`), an operator, and webhooks that say teams or roles
changed (debounced, `app.sync.refresh`).

Any process may queue a run (the store's active-run slot keeps it to one); the process that
queued it executes it while holding the run lock (a PostgreSQL advisory lock, or a file lock
beside a SQLite store) and heartbeating: when that process dies its lock goes with it and the
slot is freed at the next request, and a process that hangs is caught by the heartbeat lease.

On shutdown a run still fetching from Intercom is interrupted and its slot released (fetching is
idempotent; the next start-up redoes an interrupted run), while a run already applying its
transaction is let finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.intercom.client import IntercomClient
from app.intercom.errors import IntercomError
from app.observability.logs import run_id_var
from app.observability.metrics import SYNC_DURATION, SYNC_RUNS
from app.settings import Settings
from app.store import locks, sync_runs
from app.store.engine import Database, describe_error
from app.store.sync_runs import RunStatus, RunTrigger, RunView
from app.store.versioning import current_version
from app.sync.baseline import (
    MassRemovalBlocked,
    WorkspaceChanged,
    fetch_workspace,
)
from app.sync.outcome import apply_and_record, record_failure
from app.sync.refresh import WebhookRefresh
from app.sync.schedule import ReconcileSchedule

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
ProgressCallback = Callable[[str], None]
P = ParamSpec("P")
T = TypeVar("T")


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
        after_baseline: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        # `after_baseline` runs after each successful run, once the run lock is let go: the
        # activity-log read (composed in app.services; engines do not import each other).
        self._db = db
        self._settings = settings
        self._client_factory = client_factory
        self._owner = process_owner()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._schedule = ReconcileSchedule(
            db, settings, self._owner, self._enqueue_and_spawn, lambda: self._stopping
        )
        self._scheduler: asyncio.Task[None] | None = None
        self._refresh = WebhookRefresh(
            db,
            settings,
            self._owner,
            self.request_run,
            self._enqueue_and_spawn,
            lambda: self._stopping,
        )
        self._after_baseline = after_baseline

    # ----- requests -------------------------------------------------------------------------

    async def request_run(
        self, trigger: RunTrigger, *, force: bool = False
    ) -> tuple[RunView, bool]:
        """Queue a run (or return the one already queued or running) and execute it here."""
        run, created = await self._enqueue_and_spawn(
            lambda session: sync_runs.enqueue_run(
                session, trigger=trigger, force=force, owner=self._owner
            ),
            trigger=trigger,
            force=force,
        )
        assert run is not None  # enqueue_run always answers with a run
        return run, created

    async def _enqueue_and_spawn(
        self,
        enqueue: Callable[[Session], tuple[RunView | None, bool]],
        *,
        trigger: RunTrigger,
        force: bool,
    ) -> tuple[RunView | None, bool]:
        """Queue through `enqueue` and execute a run it created here. A run created while
        this process stops (or while the caller is cancelled) is released at once, so no
        queued run is left without an executor."""
        queuing = asyncio.ensure_future(run_in_threadpool(self._queue, enqueue))
        try:
            run, created = await asyncio.shield(queuing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                run, created = await queuing
                if created and run is not None:
                    await self._release(run.id, "the process stopped before this sync started")
            raise
        if created and run is not None:
            if self._stopping:
                await self._release(run.id, "the process stopped before this sync started")
            else:
                self._spawn(self.execute(run.id, force=force, trigger=trigger))
        return run, created

    async def _release(self, run_id: int, message: str) -> None:
        await run_in_threadpool(self._writing, sync_runs.release_run, run_id, message=message)

    def request_refresh(self, *, unknown_since: datetime | None = None) -> None:
        """Refetch teammates and teams soon, once per burst of requests (see WebhookRefresh)."""
        self._refresh.request(unknown_since=unknown_since)

    # ----- execution ------------------------------------------------------------------------

    async def run_now(
        self,
        trigger: RunTrigger,
        *,
        force: bool,
        started: Callable[[RunView], None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[RunView, bool]:
        """Queue a run and execute it in this process (`intercom-sync sync`): the finished
        run and True, or the run already queued or running and False. `started` is called
        once the run is queued, before it executes."""
        view, created = await run_in_threadpool(
            self._queue,
            lambda session: sync_runs.enqueue_run(
                session, trigger=trigger, force=force, owner=self._owner
            ),
        )
        if not created:
            return view, False
        if started is not None:
            started(view)
        return await self.execute(view.id, force=force, trigger=trigger, progress=progress), True

    async def execute(
        self,
        run_id: int,
        *,
        force: bool,
        trigger: RunTrigger,
        progress: ProgressCallback | None = None,
    ) -> RunView:
        """Run a queued baseline to completion and record its outcome."""
        token = run_id_var.set(str(run_id))
        started = time.monotonic()
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(run_id))
        lock: locks.RunLock | None = None
        acquiring = asyncio.ensure_future(run_in_threadpool(locks.acquire_run_lock, self._db))
        try:
            try:
                lock = await asyncio.shield(acquiring)
            except Exception as exc:
                view = await self._finish(
                    run_id,
                    RunStatus.FAILED,
                    error=("internal_error", f"could not take the run lock: {type(exc).__name__}"),
                    exc_info=exc,
                )
            else:
                view = await self._execute_locked(run_id, lock, force=force, progress=progress)
        except asyncio.CancelledError:
            # Shutting down: free the slot now rather than leave it to the heartbeat lease.
            logger.warning("sync run %s interrupted: the process is stopping", run_id)
            if lock is None:
                # A lock taken after the cancellation must still be let go of below.
                with contextlib.suppress(Exception):
                    lock = await acquiring
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._release(
                        run_id,
                        "the process stopped before this sync finished; "
                        "it runs again at the next start-up or reconcile",
                    )
                )
            raise
        finally:
            heartbeat.cancel()
            if lock is not None:
                await asyncio.shield(run_in_threadpool(lock.release))
            run_id_var.reset(token)
        SYNC_RUNS.labels(trigger, view.status).inc()
        SYNC_DURATION.labels(view.status).observe(time.monotonic() - started)
        if view.status == RunStatus.SUCCEEDED and self._after_baseline is not None:
            # After the run lock is let go (a long backfill must not hold up the next sync);
            # the activity-log reader records its own failures and never raises.
            await self._after_baseline()
        return view

    async def _execute_locked(
        self,
        run_id: int,
        lock: locks.RunLock | None,
        *,
        force: bool,
        progress: ProgressCallback | None,
    ) -> RunView:
        if lock is None:
            return await self._finish(
                run_id,
                RunStatus.FAILED,
                error=(
                    "sync_lock_busy",
                    "another process is still running an earlier sync; try again later",
                ),
            )
        return await self._execute(run_id, force=force, progress=progress)

    async def _execute(
        self, run_id: int, *, force: bool, progress: ProgressCallback | None
    ) -> RunView:
        say = progress or (lambda _message: None)
        version_before = await run_in_threadpool(self._current_version)
        await run_in_threadpool(
            self._writing, sync_runs.start_run, run_id, version_before=version_before
        )
        logger.info("sync run %s started", run_id)
        if self._client_factory is None:
            return await self._finish(
                run_id,
                RunStatus.FAILED,
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
                    RunStatus.FAILED,
                    error=(
                        "workspace_mismatch",
                        f"the token belongs to workspace {fetched.workspace.id_code}, not "
                        f"INTERCOM_WORKSPACE_ID={self._settings.intercom_workspace_id}",
                    ),
                )
            say("applying the difference to the store")
            applying = asyncio.ensure_future(
                run_in_threadpool(
                    apply_and_record, self._db, self._settings, run_id, fetched, force
                )
            )
            try:
                view = await asyncio.shield(applying)
            except asyncio.CancelledError:
                # The transaction cannot stop half-way: let it commit (or roll back) first.
                with contextlib.suppress(Exception):
                    await applying
                raise
        except (IntercomError, WorkspaceChanged) as exc:
            # Each message says what failed and what to check (an auth failure is not retried).
            return await self._finish(run_id, RunStatus.FAILED, error=(exc.code, exc.message))
        except MassRemovalBlocked as exc:
            return await self._finish(
                run_id,
                RunStatus.BLOCKED,
                error=(exc.code, exc.message),
                details={"would_remove": exc.teammates},
            )
        except Exception as exc:
            return await self._finish(
                run_id,
                RunStatus.FAILED,
                error=("internal_error", describe_error(exc)),
                exc_info=exc,
            )
        return view

    async def _finish(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: tuple[str, str],
        details: dict[str, Any] | None = None,
        exc_info: BaseException | None = None,
    ) -> RunView:
        """Record a run that did not succeed (see `record_failure`)."""
        return await run_in_threadpool(
            partial(record_failure, error=error, details=details, exc_info=exc_info),
            self._db,
            run_id,
            status,
        )

    def _writing(
        self, write: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`write` in a write transaction of its own."""
        with self._db.writing() as session:
            return write(session, *args, **kwargs)

    def _queue(self, enqueue: Callable[[Session], T]) -> T:
        """`enqueue` in a write transaction of its own. When another process queued a run
        between its read of the active slot and its insert (the slot's unique constraint
        refuses ours), again in a new transaction, which answers with that run."""
        for _ in range(5):
            try:
                with self._db.writing() as session:
                    return enqueue(session)
            except IntegrityError:
                continue
        raise RuntimeError("could not queue a sync run: the active-run slot kept changing")

    def _current_version(self) -> int:
        with self._db.reading() as session:
            return current_version(session)

    async def _heartbeat(self, run_id: int) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await run_in_threadpool(self._writing, sync_runs.heartbeat, run_id)
            except Exception:
                logger.warning("could not heartbeat sync run %s", run_id, exc_info=True)

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule.run())

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop scheduling, interrupt runs still fetching (releasing their slot), and wait up
        to `grace_seconds` for a run that is applying to commit."""
        self._stopping = True
        for task in (self._scheduler, self._refresh.task, *self._tasks):
            if task is not None:
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_seconds)

    def _spawn(self, coroutine: Awaitable[object]) -> None:
        async def wrapper() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nobody awaits these tasks: say what went wrong instead of losing it.
                logger.exception("a sync task failed")

        task = asyncio.get_running_loop().create_task(wrapper())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
