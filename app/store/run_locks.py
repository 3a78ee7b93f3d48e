"""The locks around sync runs, apart from the run records they guard (app.store.sync_runs).

On PostgreSQL two advisory locks add to the active-run slot. Queuing takes a
transaction-scoped lock, so "is a run due?" and "queue it" are one step across replicas. The
process executing a run holds a session lock on a dedicated connection (`acquire_run_lock`);
PostgreSQL drops it the moment that process dies, so a running run whose lock is free is known
abandoned at once instead of after the lease. On SQLite the run lock is an exclusive `flock` on
a file beside the database (`<database>.sync-lock`), which the operating system likewise drops
when its process dies."""

from __future__ import annotations

import logging
import os
import sys
import time

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.store.engine import Database

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

# PostgreSQL advisory lock keys (migrations/env.py uses 0x1C5_0001 for migrations).
RUN_LOCK_KEY = 0x1C5_0002
ENQUEUE_LOCK_KEY = 0x1C5_0003


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def run_lock_is_free(session: Session) -> bool:
    """Whether no process holds the run lock (checked inside the caller's transaction)."""
    if _is_postgresql(session):
        # Transaction-scoped, so it is gone again when this transaction ends.
        return bool(session.execute(select(func.pg_try_advisory_xact_lock(RUN_LOCK_KEY))).scalar())
    path = _sqlite_lock_path(session.get_bind().engine.url.database)
    if path is None:
        return False  # no file to lock (an in-memory store): only the lease applies
    fd = _try_file_lock(path)
    if fd is None:
        return False
    os.close(fd)  # closing the descriptor drops the lock at once
    return True


def _sqlite_lock_path(database: str | None) -> str | None:
    if sys.platform == "win32" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return f"{database}.sync-lock"


def _try_file_lock(path: str) -> int | None:
    """A descriptor holding an exclusive lock on `path`, or None if another holds it.

    `flock` locks belong to the open file description, so a second open in the same process
    conflicts too, and the kernel drops the lock when its process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_enqueue(session: Session) -> None:
    """Serialize queuing across replicas (SQLite's BEGIN IMMEDIATE already does)."""
    if _is_postgresql(session):
        session.execute(select(func.pg_advisory_xact_lock(ENQUEUE_LOCK_KEY)))


class RunLock:
    """The lock held while a run executes: a PostgreSQL session lock, or on SQLite a file lock
    (none for an in-memory store). Release it after the run is closed."""

    def __init__(self, connection: Connection | None, fd: int | None = None) -> None:
        self._connection = connection
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(select(func.pg_advisory_unlock(RUN_LOCK_KEY)))
        except Exception:
            # Never hand a connection that may still hold the lock back to the pool.
            logger.warning("could not release the sync run lock; dropping its connection")
            connection.invalidate()
        finally:
            connection.close()


# This one takes the Database, not a Session: the lock outlives every transaction of the run
# (it is held from before the run starts until after it is closed), so on PostgreSQL it needs
# a connection of its own, in autocommit, that no transaction of the run's shares.
def acquire_run_lock(db: Database, *, wait_seconds: float = 5.0) -> RunLock | None:
    """Take the run lock, waiting up to `wait_seconds`; None if another process holds it
    (one still running a sync whose slot expired, e.g. after a long stall)."""
    if db.is_sqlite:
        path = _sqlite_lock_path(db.engine.url.database)
        if path is None:
            return RunLock(None)
        deadline = time.monotonic() + wait_seconds
        while (fd := _try_file_lock(path)) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        return RunLock(None, fd)
    connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            if connection.execute(select(func.pg_try_advisory_lock(RUN_LOCK_KEY))).scalar():
                return RunLock(connection)
            if time.monotonic() >= deadline:
                connection.close()
                return None
            # Enqueue transactions hold it for a moment while checking for abandoned runs.
            time.sleep(0.1)
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
