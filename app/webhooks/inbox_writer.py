"""Stage 2, the inbox writer: one writer thread stores deliveries with group commit.

Concurrent requests hand their rows to the writer and wait; the writer inserts whatever has
queued up in one transaction and answers them all after the commit, with one wake-up of the
event loop per batch rather than one per delivery. Durability per delivery
stays (nothing is answered before its commit) while SQLite sees one writer instead of a
threadpool fighting over its lock (reliability rule R13).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from app.store.engine import Database
from app.store.inbox import NewEvent, store_events

logger = logging.getLogger(__name__)

MAX_BATCH = 256
_STOP = object()
Pending = tuple[NewEvent, "asyncio.Future[bool]"]


class InboxWriter:
    def __init__(self, db: Database, *, on_committed: Callable[[], None] | None = None) -> None:
        self._db = db
        # SimpleQueue: a C queue, a fraction of queue.Queue's cost per put and get.
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._on_committed = on_committed
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the writer thread; call from the event loop that will await `store`."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def store(self, event: NewEvent) -> bool:
        """Store one delivery durably; True when new, False when a duplicate."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("the inbox writer is not running")
        future: asyncio.Future[bool] = self._loop.create_future()
        self._queue.put((event, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop_after = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            self._write(batch)  # type: ignore[arg-type]
            if stop_after:
                return

    def _write(self, batch: list[Pending]) -> None:
        try:
            with self._db.writing() as session:
                outcomes = store_events(session, [event for event, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                # One bad row must not fail its neighbours: store them one by one.
                for entry in batch:
                    self._write([entry])
                return
            logger.exception("could not store a webhook delivery")
            self._settle_threadsafe(batch, exc)
            return
        self._settle_threadsafe(batch, outcomes)
        if self._on_committed is not None:
            self._on_committed()

    def _settle_threadsafe(self, batch: list[Pending], result: list[bool] | Exception) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_settle, batch, result)
        except RuntimeError:
            logger.warning("the event loop closed before %d deliveries were answered", len(batch))


def _settle(batch: list[Pending], result: list[bool] | Exception) -> None:
    for index, (_, future) in enumerate(batch):
        if future.done():  # the request was cancelled (its client went away)
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result[index])
