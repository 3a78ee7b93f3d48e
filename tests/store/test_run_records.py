"""Run records and run locks in the store (issue 18.3): the records are written in the caller's
transaction, the locks live apart from them, and statuses and triggers keep their stored
strings."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from sqlalchemy import text

import app.store
from app.store import sync_runs
from app.store.engine import Database
from app.store.locks import acquire_run_lock, run_lock_is_free
from app.store.sync_runs import RunStatus, RunTrigger

ROOT = Path(__file__).resolve().parent.parent.parent

# Store functions that take the Database rather than the caller's Session, and why.
OWN_CONNECTION_OR_TRANSACTIONS = {
    # The run lock outlives every transaction of the run: on PostgreSQL it needs a connection
    # of its own.
    "app.store.locks.acquire_run_lock",
    # Like the run lock, a provisioning team lock is a session lock on a connection of its own.
    "app.store.locks.try_team_lock",
    # Reads the key, may expire an abandoned claim, then inserts, retrying on a lost race: several
    # transactions by design.
    "app.store.provisioning.start_request",
    "app.store.provisioning._by_key",  # start_request's read
}


def test_statuses_and_triggers_keep_their_stored_and_served_strings() -> None:
    assert [status.value for status in RunStatus] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "blocked",
    ]
    assert [trigger.value for trigger in RunTrigger] == [
        "startup",
        "schedule",
        "operator",
        "webhook",
        "cli",
    ]


def test_a_run_is_queued_started_and_finished_in_the_callers_transactions(store: Database) -> None:
    with store.writing() as session:
        run, created = sync_runs.enqueue_run(
            session, trigger=RunTrigger.CLI, force=False, owner="test"
        )
    assert created
    with store.writing() as session:
        again, created = sync_runs.enqueue_run(
            session, trigger=RunTrigger.OPERATOR, force=False, owner="test"
        )
    assert (again.id, created) == (run.id, False)
    lock = acquire_run_lock(store)
    assert lock is not None
    try:
        with store.writing() as session:
            sync_runs.start_run(session, run.id, version_before=0)
            sync_runs.heartbeat(session, run.id)
        with store.writing() as session:
            finished = sync_runs.finish_run(session, run.id, status=RunStatus.SUCCEEDED)
    finally:
        lock.release()
    assert finished.status is RunStatus.SUCCEEDED
    with store.reading() as session:
        stored = session.execute(text("SELECT trigger, status FROM sync_run")).one()
        view = sync_runs.get_run(session, run.id)
    assert tuple(stored) == ("cli", "succeeded")
    assert view is not None
    assert (view.trigger, view.status) == (RunTrigger.CLI, RunStatus.SUCCEEDED)


def test_a_rolled_back_caller_leaves_no_run_behind(store: Database) -> None:
    class Abandon(Exception):
        pass

    try:
        with store.writing() as session:
            sync_runs.enqueue_run(session, trigger=RunTrigger.CLI, force=False, owner="test")
            raise Abandon
    except Abandon:
        pass
    with store.reading() as session:
        assert sync_runs.latest_run(session) is None


def test_the_run_lock_is_held_by_one_taker_and_free_once_released(store: Database) -> None:
    lock = acquire_run_lock(store, wait_seconds=0)
    assert lock is not None
    try:
        assert acquire_run_lock(store, wait_seconds=0) is None
        with store.writing() as session:
            assert not run_lock_is_free(session)
    finally:
        lock.release()
    with store.writing() as session:
        assert run_lock_is_free(session)
    again = acquire_run_lock(store, wait_seconds=0)
    assert again is not None
    again.release()


def test_a_running_run_whose_lock_is_free_is_failed_at_the_next_queuing(store: Database) -> None:
    with store.writing() as session:
        run, _ = sync_runs.enqueue_run(session, trigger=RunTrigger.CLI, force=False, owner="gone")
    with store.writing() as session:
        sync_runs.start_run(session, run.id)
    held = acquire_run_lock(store, wait_seconds=0)
    assert held is not None
    try:
        with store.writing() as session:
            existing, created = sync_runs.enqueue_run(
                session, trigger=RunTrigger.OPERATOR, force=False, owner="test"
            )
        assert (existing.id, created) == (run.id, False)  # its owner still holds the lock
    finally:
        held.release()
    with store.writing() as session:
        queued, created = sync_runs.enqueue_run(
            session, trigger=RunTrigger.OPERATOR, force=False, owner="test"
        )
    assert created
    assert queued.id != run.id
    with store.reading() as session:
        abandoned = sync_runs.get_run(session, run.id)
    assert abandoned is not None
    assert (abandoned.status, abandoned.error_code) == (RunStatus.FAILED, sync_runs.ABANDONED)


def test_store_functions_take_the_callers_session() -> None:
    taking_database = set()
    for module_info in pkgutil.iter_modules(app.store.__path__):
        if module_info.name == "engine":
            continue  # it makes the Database
        module = importlib.import_module(f"app.store.{module_info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__:
                continue
            parameters = inspect.signature(function).parameters.values()
            if any("Database" in str(parameter.annotation) for parameter in parameters):
                taking_database.add(f"{module.__name__}.{name}")
    assert taking_database == OWN_CONNECTION_OR_TRANSACTIONS


def test_the_store_state_row_is_read_in_one_module() -> None:
    readers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*.py")
        if "StoreState." in path.read_text() or "select(StoreState" in path.read_text()
    }
    assert readers == {"app/store/versioning.py"}
