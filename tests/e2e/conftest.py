"""Fixtures of the multi-process groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.simulator import SimulatorServer
from harness.service import ReplicaFactory, ReplicaSet


@pytest.fixture
def start_replicas(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> Iterator[ReplicaFactory]:
    """Start `intercom-sync serve` replicas on the test's database and simulator; all are
    stopped at the end."""
    replicas = ReplicaSet(database_url, sim, tmp_path)
    try:
        yield replicas.start
    finally:
        replicas.close()
