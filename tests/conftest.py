"""Fixtures: a fresh database per test (SQLite file, or a new PostgreSQL database when
TEST_DATABASE_URL is set), the Intercom simulator, and the real service on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.simulator import SimulatorServer, generate_workspace
from app.store.engine import Database, create_database
from app.store.migrate import upgrade_to_head
from harness.databases import database_server, fresh_database
from harness.service import SIM_SECRET, SIM_TOKEN, ServiceProcess, ServiceServer, make_settings

POSTGRES_URL = database_server()


def pytest_report_header() -> str:
    return f"database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite files'}"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database for this test alone."""
    with fresh_database(POSTGRES_URL, tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Database]:
    """The store at `database_url`, migrated to head."""
    upgrade_to_head(database_url)
    db = create_database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A simulator with 30 teammates (one of them Fin) in 6 teams."""
    with SimulatorServer(
        generate_workspace(30, 6, seed=3), access_token=SIM_TOKEN, client_secret=SIM_SECRET
    ) as server:
        yield server


@pytest.fixture
def start_service(
    database_url: str, sim: SimulatorServer
) -> Iterator[Callable[..., ServiceServer]]:
    """Start the real service against `sim`; keyword arguments override settings."""
    started: list[ServiceServer] = []

    def start(*, wait_ready: bool = True, **overrides: Any) -> ServiceServer:
        server = ServiceServer(make_settings(database_url, sim, **overrides)).start()
        started.append(server)
        if wait_ready:
            server.wait_ready()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def service(start_service: Callable[..., ServiceServer]) -> ServiceServer:
    """The service after its start-up baseline succeeded."""
    return start_service()


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Service processes started by the test; whatever is still alive is killed at the end."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.kill()
