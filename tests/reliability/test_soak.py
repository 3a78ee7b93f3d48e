"""A one-minute soak in every `make test` run: mixed load against a real service process with no
errors, a store that converges, and no growth in descriptors or memory beyond a generous bound
(the full run is `make soak`, 600 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.databases import database_server
from harness.service import ROOT

# A minute of load against a service process: left out of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    database_server() is not None,
    reason="the soak runs once per CI run, on SQLite; the PostgreSQL pass skips it to save time",
)
def test_a_minute_of_mixed_load_has_no_errors_and_no_leaks(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "60", "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["failures"] == []
    requests = report["requests"]
    assert requests["webhook"]["count"] > 0, requests
    assert requests["snapshot"]["count"] > 0, requests
    assert requests["resync"]["count"] > 0, requests
    assert all(row["errors"] == 0 for row in requests.values()), requests
    print(result.stdout)
