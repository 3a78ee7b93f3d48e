"""The coordinator keeps the store off its event loop (issue 18.5): a webhook's refresh that
finds a run already fetching waits for it to finish, reading the store in the threadpool, then
queues its own run, which fetches after the first one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import event, select

from app.intercom.client import intercom_client_factory
from app.simulator import SimulatorServer
from app.store.engine import Database
from app.store.models import SyncRun
from app.store.sync_runs import RunTrigger
from app.sync.coordinator import SyncCoordinator
from harness.service import make_settings


def finished_runs(store: Database) -> dict[str, SyncRun]:
    with store.reading() as session:
        runs = session.execute(select(SyncRun).where(SyncRun.finished_at.is_not(None))).scalars()
        return {run.trigger: run for run in runs}


def test_a_refresh_waits_for_a_fetching_run_without_reading_the_store_on_the_event_loop(
    store: Database, database_url: str, sim: SimulatorServer
) -> None:
    settings = make_settings(database_url, sim, webhook_refresh_debounce_seconds=0)
    on_the_loop: list[str] = []

    def note(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: where store calls belong
        on_the_loop.append(statement)

    async def scenario() -> dict[str, SyncRun]:
        coordinator = SyncCoordinator(store, settings, intercom_client_factory(settings))
        # The first run's fetch is held up long enough for the refresh to find it fetching.
        sim.add_fault(path="/admins", delay_seconds=1.0, times=1)
        await coordinator.request_run(RunTrigger.OPERATOR)
        deadline = time.monotonic() + 30
        while not sim.requests("/admins"):
            assert time.monotonic() < deadline, "the operator's run never fetched"
            await asyncio.sleep(0.01)
        coordinator.request_refresh()
        while "webhook" not in (runs := await asyncio.to_thread(finished_runs, store)):
            assert time.monotonic() < deadline, "the refresh never ran"
            await asyncio.sleep(0.05)
        await coordinator.stop()
        return runs

    event.listen(store.engine, "before_cursor_execute", note)
    try:
        runs = asyncio.run(scenario())
    finally:
        event.remove(store.engine, "before_cursor_execute", note)
    assert runs["operator"].status == "succeeded"
    assert runs["webhook"].status == "succeeded"
    # The refresh waited for the run that was fetching, and fetched after it.
    assert runs["webhook"].started_at is not None
    assert runs["operator"].finished_at is not None
    assert runs["webhook"].started_at >= runs["operator"].finished_at
    assert on_the_loop == []
