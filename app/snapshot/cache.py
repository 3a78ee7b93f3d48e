"""The snapshot body, built and serialized once per store version (and gzip-compressed once),
then served as bytes to every poller of that version (reliability rules R15, R16). The body's
definition is `reference.py`, its fast serializer `splice.py`, its gzip `piecewise_gzip.py`;
this module decides when to build and shares what was built."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from app.core.gc_pause import gc_paused
from app.snapshot.piecewise_gzip import gzip_body
from app.snapshot.splice import SnapshotMemo, serialize_in_pieces
from app.store.engine import Database
from app.store.read_errors import NotSynced
from app.store.reads import read_snapshot
from app.store.versioning import read_header

T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotBody:
    version: int
    etag: str
    raw: bytes
    gzipped: bytes


class _SharedRead(Generic[T]):
    """Runs a blocking read in the threadpool on behalf of many concurrent callers at once.

    A caller never reuses a read that began before it arrived: it joins the next read to
    start, so it sees every commit made before it asked, exactly as a read of its own would,
    while the callers that arrive during one read share a single trip to the threadpool
    (under load that hop, not the query, is what costs)."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._next: asyncio.Future[T] | None = None  # joined by callers, not started yet
        self._task: asyncio.Task[None] | None = None  # the read in progress

    async def __call__(self) -> T:
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
            # Consume the outcome even if every waiter is cancelled (no "never retrieved").
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if self._task is None:
                self._start()
        # shield: one caller giving up must not cancel the read the others wait for.
        return await asyncio.shield(future)

    def _start(self) -> None:
        future, self._next = self._next, None
        assert future is not None
        self._task = asyncio.get_running_loop().create_task(self._run(future))

    async def _run(self, future: asyncio.Future[T]) -> None:
        try:
            result = await run_in_threadpool(self._read)
        except asyncio.CancelledError:  # the loop is shutting down: nobody gets an answer
            self._task = None
            for waiting in (future, self._next):
                if waiting is not None:
                    waiting.cancel()
            self._next = None
            raise
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        self._task = None
        if self._next is not None:
            self._start()


class _SqliteCommitCounter:
    """SQLite only: `PRAGMA data_version`, asked on a connection of our own, changes whenever
    any other connection, in this process or another, commits to the file. Asking costs a few
    microseconds and never waits (busy timeout 0), so it runs on the event loop: while it
    stands still, the store header read before it is still current and no query is needed."""

    def __init__(self, db: Database) -> None:
        url = make_url(db.url)
        database = url.database or ""
        self._path = None if database in ("", ":memory:") or url.query else database
        self._connection: sqlite3.Connection | None = None

    def read(self) -> int | None:
        """The counter now, or None when it cannot be read (then read the header instead)."""
        if self._path is None:
            return None
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self._path, timeout=0, isolation_level=None, check_same_thread=False
                )
            row = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            self.close()
            return None
        return int(row[0])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class SnapshotCache:
    """Per process; every request checks the shared store version, so replicas follow it."""

    def __init__(self, db: Database, *, roles_enabled: bool) -> None:
        self._db = db
        self._roles_enabled = roles_enabled
        self._entries: dict[bool, SnapshotBody] = {}
        # Serialized users of the last build per flavour, reused when unchanged (builds are
        # serialized by `_lock`, so one build at a time touches these).
        self._memos: dict[bool, SnapshotMemo] = {}
        self._lock = asyncio.Lock()
        self._check = _SharedRead(self._current)
        self._commits = _SqliteCommitCounter(db) if db.is_sqlite else None
        # (commit counter, (version, synced)) with the header read after the counter was.
        self._known: tuple[int, tuple[int, bool]] | None = None

    def _current(self) -> tuple[int, bool]:
        with self._db.reading() as session:
            header = read_header(session)
        return header.version, header.last_sync_at is not None

    async def _version(self) -> tuple[int, bool]:
        counter = self._commits.read() if self._commits is not None else None
        known = self._known
        if counter is not None and known is not None and known[0] == counter:
            return known[1]  # nothing was committed since that header was read
        # The shared read starts after this point, so it is at least as new as `counter`.
        current = await self._check()
        if counter is not None:
            self._known = (counter, current)
        return current

    def close(self) -> None:
        if self._commits is not None:
            self._commits.close()

    async def get(self, *, include_removed: bool) -> SnapshotBody:
        version, synced = await self._version()
        if not synced:
            raise NotSynced
        entry = self._entries.get(include_removed)
        if entry is not None and entry.version == version:
            return entry
        async with self._lock:
            entry = self._entries.get(include_removed)
            if entry is not None and entry.version >= version:
                return entry
            entry = await run_in_threadpool(self._build, include_removed)
            self._entries[include_removed] = entry
            return entry

    def _build(self, include_removed: bool) -> SnapshotBody:
        memo = self._memos.setdefault(include_removed, SnapshotMemo())
        with gc_paused():
            with self._db.reading() as session:
                rows = read_snapshot(session, include_removed=include_removed)
            raw, pieces = serialize_in_pieces(rows, roles_enabled=self._roles_enabled, memo=memo)
            gzipped = gzip_body(raw, pieces, memo)
        version = rows.header.version
        suffix = "-all" if include_removed else ""
        return SnapshotBody(version=version, etag=f'"v{version}{suffix}"', raw=raw, gzipped=gzipped)
