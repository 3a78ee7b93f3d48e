"""The refetch that webhooks ask for: debounced, and only as often as it is needed.

A notification that teams, roles or a teammate not known yet changed cannot be applied from
its payload alone, so it asks for a baseline. It lives apart from the coordinator, which runs
and serializes runs whoever asks for them: this module only decides when a burst of such
requests needs a run, and whether one already queued or fetching serves it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.settings import Settings
from app.store import sync_runs
from app.store.engine import Database
from app.store.models import utcnow
from app.store.sync_runs import RunStatus, RunTrigger, RunView
from app.sync.schedule import SpawnsRuns


class RequestsRuns(Protocol):
    """The coordinator's `request_run`."""

    async def __call__(
        self, trigger: RunTrigger, *, force: bool = False
    ) -> tuple[RunView, bool]: ...


class WebhookRefresh:
    """One per coordinator; `task` is the pending refresh, cancelled when it stops."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        owner: str,
        request_run: RequestsRuns,
        enqueue_and_spawn: SpawnsRuns,
        stopping: Callable[[], bool],
    ) -> None:
        self._db = db
        self._settings = settings
        self._owner = owner
        self._request_run = request_run
        self._enqueue_and_spawn = enqueue_and_spawn
        self._stopping = stopping
        self.task: asyncio.Task[None] | None = None
        self._refresh_requested_at = 0.0
        # Whether the pending refresh was asked for by an event that can change access; if
        # not, when the earliest notification about a teammate not known yet that asked arrived.
        self._refresh_for_access = False
        self._refresh_unknown_since: datetime | None = None

    def request(self, *, unknown_since: datetime | None = None) -> None:
        """Refetch teammates and teams soon, once per burst of requests.

        A webhook that says access changed gets a run that fetches after it: if a run is
        already fetching, another one follows. Notifications about teammates not known yet
        (`unknown_since`: when the earliest of them arrived) only need some run that fetches
        after they arrived, so one queued since then, on any replica, serves them.
        """
        self._refresh_requested_at = time.monotonic()
        if unknown_since is None:
            self._refresh_for_access = True
        elif self._refresh_unknown_since is None or unknown_since < self._refresh_unknown_since:
            self._refresh_unknown_since = unknown_since
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._debounced_refresh())

    async def _debounced_refresh(self) -> None:
        debounce = self._settings.webhook_refresh_debounce_seconds
        first = time.monotonic()
        # Wait for a quiet window, but no longer than five windows in a steady stream.
        while not self._stopping():
            quiet_for = time.monotonic() - self._refresh_requested_at
            if quiet_for >= debounce or time.monotonic() - first >= 5 * debounce:
                break
            await asyncio.sleep(debounce - quiet_for)
        try:
            while not self._stopping():
                if not self._refresh_for_access:
                    await self._refresh_for_unknown_teammates()
                    if not self._refresh_for_access:
                        return
                    continue  # access changed meanwhile: that needs a run fetching after it
                run, created = await self._request_run(RunTrigger.WEBHOOK)
                if created or run.status == RunStatus.QUEUED:
                    return  # that run fetches after the request, so it sees the change
                # A run already fetching may have read Intercom before the change: refetch
                # after it.
                await self._wait_for(run.id)
        finally:
            self._refresh_for_access = False
            self._refresh_unknown_since = None

    async def _refresh_for_unknown_teammates(self) -> None:
        """Queue a run unless one is active or, on any replica, one fetched after the
        notifications arrived: that is all they need."""
        since = self._refresh_unknown_since or utcnow()

        def not_served_yet(session: Session) -> bool:
            return not sync_runs.fetches_after(sync_runs.latest_run(session), since)

        def enqueue(session: Session) -> tuple[RunView | None, bool]:
            run = sync_runs.enqueue_run_if_due(
                session, trigger=RunTrigger.WEBHOOK, owner=self._owner, is_due=not_served_yet
            )
            return run, run is not None

        await self._enqueue_and_spawn(enqueue, trigger=RunTrigger.WEBHOOK, force=False)

    async def _wait_for(self, run_id: int) -> None:
        # The run may be another replica's, so the store is what says it finished; it is read
        # in the threadpool, like every store call here, not on the event loop.
        def finished() -> bool:
            with self._db.reading() as session:
                run = sync_runs.get_run(session, run_id)
            return run is None or run.finished_at is not None

        while not self._stopping():
            if await run_in_threadpool(finished):
                return
            await asyncio.sleep(0.2)
