"""Token and host hygiene at the command line (issue 11.4): `serve` and `migrate` refuse a short
API token with one stderr line that names the variable, never the token, and a non-zero exit;
`sync` warns about a clear-text base URL as `serve` does, and its failure names the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.service import service_env

INTERCOM_SYNC = Path(sys.executable).parent / "intercom-sync"
SHORT = "tooshort9"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]])
@pytest.mark.parametrize("variable", ["READ_API_TOKENS", "OPERATOR_API_TOKENS"])
def test_a_short_token_stops_the_command_with_one_line(
    database_url: str, tmp_path: Path, command: list[str], variable: str
) -> None:
    env = service_env(database_url, None, **{variable: SHORT})
    result = subprocess.run(
        [str(INTERCOM_SYNC), *command],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "at least 16 characters" in lines[0]
    assert SHORT not in result.stdout + result.stderr


def test_sync_warns_about_a_clear_text_base_url_and_its_failure_names_the_host(
    database_url: str, tmp_path: Path
) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed, so the run fails without a server.
    env = service_env(
        database_url,
        None,
        INTERCOM_API_BASE_URL="http://192.0.2.1:8900",
        INTERCOM_ALLOW_INSECURE_BASE_URL="true",
        INTERCOM_ACCESS_TOKEN="a-token-that-is-never-sent-anywhere",
        INTERCOM_TIMEOUT_SECONDS="1",
        INTERCOM_MAX_ATTEMPTS="1",
    )
    result = subprocess.run(
        [str(INTERCOM_SYNC), "sync"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning: ")]
    assert any("clear text" in w and "INTERCOM_ALLOW_INSECURE_BASE_URL" in w for w in warnings)
    [reason] = [x for x in result.stderr.splitlines() if x.strip() and x not in warnings]
    assert reason.startswith("sync failed: "), reason
    assert "192.0.2.1" in reason
    assert "a-token-that-is-never-sent-anywhere" not in result.stdout + result.stderr
