"""The locks that serialize work across every process sharing the store, apart from the records
they guard: the run lock and the enqueue lock around sync runs (app.store.sync_runs), and the
per-team write lock of provisioning (app.store.provisioning).

On PostgreSQL two advisory locks add to the active-run slot. Queuing takes a
transaction-scoped lock, so "is a run due?" and "queue it" are one step across replicas. The
process executing a run holds a session lock on a dedicated connection (`acquire_run_lock`);
PostgreSQL drops it the moment that process dies, so a running run whose lock is free is known
abandoned at once instead of after the lease. On SQLite the run lock is an exclusive `flock` on
a file beside the database (`<database>.sync-lock`), which the operating system likewise drops
when its process dies.

Changing a team's members is a read-modify-write of Intercom's whole member list, so writes to
one team are serialized: on PostgreSQL with a session advisory lock on a hash of the team id,
held on a dedicated connection (no transaction stays open while Intercom answers); on SQLite
with an exclusive `flock` on `<database>.team-lock` (one lock for all teams: a SQLite store has
few writers)."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.store.engine import Database

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

# PostgreSQL advisory lock keys (migrations/env.py uses 0x1C5_0001 for migrations). Team
# writes use the two-key form with TEAM_LOCK_CLASS, a key space of its own.
RUN_LOCK_KEY = 0x1C5_0002
ENQUEUE_LOCK_KEY = 0x1C5_0003
TEAM_LOCK_CLASS = 0x1C5_0004

RUN_LOCK_SUFFIX = ".sync-lock"
TEAM_LOCK_SUFFIX = ".team-lock"


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def run_lock_is_free(session: Session) -> bool:
    """Whether no process holds the run lock (checked inside the caller's transaction)."""
    if _is_postgresql(session):
        # Transaction-scoped, so it is gone again when this transaction ends.
        return bool(session.execute(select(func.pg_try_advisory_xact_lock(RUN_LOCK_KEY))).scalar())
    path = _sqlite_lock_path(session.get_bind().engine.url.database, RUN_LOCK_SUFFIX)
    if path is None:
        return False  # no file to lock (an in-memory store): only the lease applies
    fd = _try_file_lock(path)
    if fd is None:
        return False
    os.close(fd)  # closing the descriptor drops the lock at once
    return True


def _sqlite_lock_path(database: str | None, suffix: str) -> str | None:
    """The lock file beside a SQLite database; None for a store with no file of its own."""
    if sys.platform == "win32" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return f"{database}{suffix}"


def _try_file_lock(path: str) -> int | None:
    """A descriptor holding an exclusive lock on `path`, or None if another holds it.

        `flock` locks belong to the open file description, so a second open in the same process
        conflicts too, and the kernel drops the lock when its process dies.

    Changing a team's members is a read-modify-write of Intercom's whole member list, so writes to
    one team are serialized: on PostgreSQL with a session advisory lock on a hash of the team id,
    held on a dedicated connection (no transaction stays open while Intercom answers); on SQLite
    with an exclusive `flock` on `<database>.team-lock` (one lock for all teams: a SQLite store has
    few writers)."""
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
        path = _sqlite_lock_path(db.engine.url.database, RUN_LOCK_SUFFIX)
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


def team_lock_key(team_id: str) -> int:
    """A signed 32-bit hash of the team id (the second key of a two-key advisory lock)."""
    digest = hashlib.sha256(team_id.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class TeamLock:
    """Held while one team's members are read from Intercom, written and stored."""

    def __init__(
        self, connection: Connection | None, key: int | None, fd: int | None = None
    ) -> None:
        self._connection = connection
        self._key = key
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock
            _SQLITE_THREAD_LOCK.release()
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(select(func.pg_advisory_unlock(TEAM_LOCK_CLASS, self._key)))
        except Exception:
            logger.warning("could not release a team lock; dropping its connection")
            connection.invalidate()
        finally:
            connection.close()


# flock is per open file description, so threads of one process already exclude each other;
# the thread lock only spares them the file system.
_SQLITE_THREAD_LOCK = threading.Lock()


def try_team_lock(db: Database, team_id: str) -> TeamLock | None:
    """Take the write lock of `team_id` if it is free, else None at once. Never waits, so a
    caller polls from the event loop rather than parking worker threads, which the holder of
    the lock needs to finish and let go."""
    if db.is_sqlite:
        if not _SQLITE_THREAD_LOCK.acquire(blocking=False):
            return None
        path = _sqlite_lock_path(db.engine.url.database, TEAM_LOCK_SUFFIX)
        if path is None:
            return TeamLock(None, None, _dummy_fd())
        try:
            fd = _try_file_lock(path)
        except BaseException:
            _SQLITE_THREAD_LOCK.release()
            raise
        if fd is None:
            _SQLITE_THREAD_LOCK.release()
            return None
        return TeamLock(None, None, fd)
    key = team_lock_key(team_id)
    connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        taken = connection.execute(select(func.pg_try_advisory_lock(TEAM_LOCK_CLASS, key))).scalar()
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    if not taken:
        connection.close()
        return None
    return TeamLock(connection, key)


def _dummy_fd() -> int:
    """An in-memory SQLite store has no file to lock; the thread lock alone serializes."""
    return os.open(os.devnull, os.O_RDONLY)
