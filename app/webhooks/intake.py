"""Webhook intake: one writer thread stores deliveries with group commit.

Concurrent requests hand their rows to the writer and wait; the writer inserts whatever has
queued up in one transaction and answers them all after the commit. Durability per delivery
stays (nothing is answered before its commit) while SQLite sees one writer instead of a
threadpool fighting over its lock (reliability rule R13).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from app.store.engine import Database
from app.store.inbox import NewEvent, store_events

logger = logging.getLogger(__name__)

MAX_BATCH = 256
_STOP = object()


class InboxWriter:
    def __init__(self, db: Database, *, on_committed: Callable[[], None] | None = None) -> None:
        self._db = db
        self._queue: queue.Queue[object] = queue.Queue()
        self._on_committed = on_committed
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def store(self, event: NewEvent) -> bool:
        """Store one delivery durably; True when new, False when a duplicate."""
        if self._thread is None:
            raise RuntimeError("the inbox writer is not running")
        future: Future[bool] = Future()
        self._queue.put((event, future))
        return await asyncio.wrap_future(future)

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

    def _write(self, batch: list[tuple[NewEvent, Future[bool]]]) -> None:
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
            batch[0][1].set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)
        if self._on_committed is not None:
            self._on_committed()
