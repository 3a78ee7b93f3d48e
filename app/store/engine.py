"""Engine and session set-up for SQLite (WAL) and PostgreSQL (psycopg 3).

Writers and readers are kept apart: a write transaction on SQLite starts with
`BEGIN IMMEDIATE`, so it takes the write lock up front and waits on `busy_timeout` instead of
failing with "database is locked" when it upgrades from a read. Reads on PostgreSQL run at
REPEATABLE READ so a snapshot sees one consistent version.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_database_url(url: str) -> str:
    """Plain `postgresql://` and `postgres://` URLs use psycopg 3; SQLite uses the stdlib."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch a new file to WAL (a no-op once it is). The switch needs an exclusive lock, and
    when two processes open a new file at once SQLite may answer one of them "database is
    locked" at once rather than call the busy handler, which could deadlock there; the other
    process is done within milliseconds, so try again until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not open transactions on its own; we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        # FULL: a webhook answered 200 survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


@dataclass
class Database:
    """The engine plus a session factory for readers and one for writers."""

    url: str
    engine: Engine
    read_sessions: sessionmaker[Session]
    write_sessions: sessionmaker[Session]
    # SQLite: this process's writers queue here before `BEGIN IMMEDIATE`. SQLite admits one
    # writer at a time anyway, but a writer that finds the lock taken polls for it with
    # growing sleeps (up to 100 ms), so the inbox writer could wait out several apply
    # batches in a row; a lock in the process hands over on release instead. (Writers in
    # other processes still meet SQLite's busy handler.) Re-entrant, so a nested write
    # transaction behaves as before.
    write_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only transaction seeing one consistent state of the store."""
        with self.read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with self.write_lock, self.write_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        retired = self.engine.pool
        self.engine.dispose()
        # A connection still checked out now (a worker thread whose awaiting task was cancelled
        # at shutdown goes on until its call returns) comes back later to the pool just
        # retired, which nothing uses any more: close it then rather than leave it open for
        # the garbage collector (psycopg warns about every connection it finds open).
        event.listen(retired, "checkin", _close_returned_connection)


def _close_returned_connection(dbapi_connection: Any, _record: Any) -> None:
    if dbapi_connection is not None:
        try:
            dbapi_connection.close()
        except Exception:
            logger.debug("closing a connection returned after dispose failed", exc_info=True)


def describe_error(exc: BaseException) -> str:
    """A one-line account of an error for records an operator reads (`/webhook-events`, a
    run's error): for a failed statement, the driver's error class and its first line, never
    the SQL text or the bound values (teammates' emails), which SQLAlchemy's message carries."""
    if isinstance(exc, StatementError):
        cause = exc.orig if exc.orig is not None else exc
        first_line = (str(cause).strip().splitlines() or [""])[0][:200]
        code = getattr(cause, "sqlstate", None)
        state = f", SQLSTATE {code}" if code else ""
        return f"the store refused a statement ({type(cause).__name__}{state}: {first_line})"
    return f"{type(exc).__name__}: {exc}"


# Every engine is made with `hide_parameters=True`: an error's message and a logged traceback
# then show no bound values, which are teammates' names and emails.
def create_database(url: str, *, pool_size: int = 10) -> Database:
    """Open the store at `url` (`sqlite:///…` or `postgresql://…`)."""
    normalized = normalize_database_url(url)
    if is_sqlite(normalized):
        _ensure_sqlite_folder(normalized)
        engine = create_engine(
            normalized,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        write_engine: Engine = engine.execution_options(sqlite_begin="IMMEDIATE")
        read_engine: Engine = engine
        write_lock: AbstractContextManager[Any] = threading.RLock()
    else:
        engine = create_engine(
            normalized,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            hide_parameters=True,
        )
        write_engine = engine
        read_engine = engine.execution_options(isolation_level="REPEATABLE READ")
        write_lock = nullcontext()  # PostgreSQL writers lock rows, not the database
    return Database(
        url=normalized,
        engine=engine,
        read_sessions=sessionmaker(read_engine, expire_on_commit=False),
        write_sessions=sessionmaker(write_engine, expire_on_commit=False),
        write_lock=write_lock,
    )


def create_migration_engine(url: str) -> Engine:
    """A short-lived engine for alembic, with the same SQLite pragmas as the service."""
    normalized = normalize_database_url(url)
    if is_sqlite(normalized):
        _ensure_sqlite_folder(normalized)
        # IMMEDIATE: a migration holds the write lock from its first statement, so processes
        # starting together on one file take turns (the later ones find the schema at head)
        # instead of both creating the same tables.
        engine = create_engine(
            normalized,
            poolclass=NullPool,
            execution_options={"sqlite_begin": "IMMEDIATE"},
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(normalized, poolclass=NullPool, hide_parameters=True)
