"""A store holds one workspace: a sync whose token now reads another workspace fails with
`workspace_changed` everywhere an operator looks (the run, `/readyz`, the CLI) and applies
nothing, rather than serving C1 a mix of two workspaces (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.simulator import SimulatorServer
from harness.service import OPERATOR_TOKEN, ServiceServer, service_env
from harness.workload import wait_run

INTERCOM_SYNC = Path(sys.executable).parent / "intercom-sync"
STORED, OTHER = "sim0ws01", "sim0ws99"


def test_a_sync_of_another_workspace_fails_everywhere_and_changes_nothing(
    service: ServiceServer, sim: SimulatorServer, database_url: str, tmp_path: Path
) -> None:
    assert sim.workspace.id_code == STORED
    with service.client() as client:
        before = client.get("/api/v1/snapshot", headers={"Accept-Encoding": "identity"})
    sim.workspace.id_code = OTHER  # the access token now belongs to another workspace

    with service.client(OPERATOR_TOKEN) as op:
        for force in (False, True):  # force passes the removal brake, not this
            started = op.post("/resync", params={"force": str(force).lower()})
            assert started.status_code == 202, started.text
            run = wait_run(op, started.json()["id"])
            assert run["status"] == "failed", run
            assert run["error"]["code"] == "workspace_changed", run
            message = run["error"]["message"]
            assert STORED in message
            assert OTHER in message
            assert "DATABASE_URL" in message

    with service.client() as client:
        after = client.get("/api/v1/snapshot", headers={"Accept-Encoding": "identity"})
    assert after.status_code == 200
    assert after.content == before.content  # byte for byte: nothing of the other was applied
    readiness = httpx.get(f"{service.url}/readyz", timeout=10).json()
    assert "workspace_changed" in readiness["problems"], readiness

    result = subprocess.run(
        [str(INTERCOM_SYNC), "sync"],
        env={**os.environ, **service_env(database_url, sim)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    [reason] = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("warning: ")  # the simulator is not a region
    ]
    assert reason.startswith("sync failed: workspace_changed: the store holds"), reason
    assert OTHER in reason
    assert "Traceback" not in result.stderr
