"""Token hygiene at the command line (issue 11.4): `serve` and `migrate` refuse a short API token
with one stderr line that names the variable, never the token, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import service_env

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
