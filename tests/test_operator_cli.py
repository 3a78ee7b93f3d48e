"""Operators see what a run would do (issue 17.11-17.12), through the real console
script against the simulator: `sync --dry-run` prints the diff and writes nothing, a blocked
run names who it would remove (in `/sync-runs/{id}` and on the CLI), `sync` prints a line per
retry or rate-limit wait, `--version`, `check`, the simulator's Ctrl-C and busy port, and the
service's log of run outcomes (one warning with its code; results as JSON fields)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app import __version__
from app.simulator import SimulatorServer
from app.simulator.records import SimAdmin
from app.store.engine import create_database
from app.store.migrate import upgrade_to_head
from app.store.models import Base
from harness.service import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    ROOT,
    SIM_SECRET,
    SIM_TOKEN,
    ServiceProcess,
    ServiceServer,
    service_env,
)
from harness.waiting import free_port, wait_for
from tests.api.test_openapi import OpenApiChecker
from tests.test_cli import unusable_database_urls

INTERCOM_SYNC = Path(sys.executable).parent / "intercom-sync"


def run(
    args: list[str], env: dict[str, str], cwd: Path, *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INTERCOM_SYNC), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def store_contents(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    db = create_database(database_url)
    try:
        with db.reading() as session:
            return {
                table.name: [
                    tuple(row)
                    for row in session.execute(
                        select(table).order_by(*table.primary_key.columns)
                    ).all()
                ]
                for table in Base.metadata.sorted_tables
            }
    finally:
        db.dispose()


def synced(database_url: str, sim: SimulatorServer, tmp_path: Path) -> dict[str, str]:
    env = service_env(database_url, sim)
    first = run(["sync"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    return env


class TestDryRun:
    def test_it_prints_who_would_be_added_removed_and_changed_and_writes_nothing(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        env = synced(database_url, sim, tmp_path)
        ws = sim.workspace
        leaver, renamed, mover = sorted(ws.admins.values(), key=lambda a: a.id)[:3]
        ws.remove_admin(leaver.id)
        changed = renamed.copy()
        changed.name, changed.email = "Renée Renamed", "renee.renamed@acme.example"
        ws.upsert_admin(changed)
        left_team = mover.team_ids[0]
        joined_team = next(t for t in sorted(ws.teams) if t not in mover.team_ids)
        ws.remove_member(left_team, mover.id)
        ws.upsert_admin(
            SimAdmin(
                id="991269999",
                name="Dana Newcomer",
                email="dana@acme.example",
                team_ids=[joined_team],
            )
        )
        before = store_contents(database_url)

        result = run(["sync", "--dry-run"], env, tmp_path)

        assert result.returncode == 0, result.stderr
        out = result.stdout
        lines = out.splitlines()
        assert "teammates to add (1):" in lines
        assert "  + 991269999 Dana Newcomer <dana@acme.example>" in lines
        assert "teammates to remove (1):" in lines
        assert f"  - {leaver.id} {leaver.name} <{leaver.email}>" in lines
        assert "teammates to change (1):" in lines
        assert f"  ~ {renamed.id} Renée Renamed <renee.renamed@acme.example>: name, email" in lines
        # Memberships by team: the mover left one team, the newcomer joined another.
        mover_line = f"    - {mover.id} {mover.name} <{mover.email}>"
        left_at = lines.index(f"  team {left_team} {ws.teams[left_team].name}:")
        assert mover_line in lines[left_at + 1 :]
        joined_at = lines.index(f"  team {joined_team} {ws.teams[joined_team].name}:")
        assert lines[joined_at + 1] == "    + 991269999 Dana Newcomer <dana@acme.example>"
        assert "  teammates:   1 added, 1 updated, 1 removed" in lines
        assert lines[-1] == "dry run: nothing was written (the store stays at version 1)"
        # Nothing written: no run record, no version, every table as it was.
        assert store_contents(database_url) == before

        # The real run then does what the dry run said.
        real = run(["sync"], env, tmp_path)
        assert real.returncode == 0, real.stderr
        assert "  teammates:   1 added, 1 updated, 1 removed" in real.stdout.splitlines()

    def test_it_says_a_real_run_would_be_blocked_and_still_writes_nothing(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        env = synced(database_url, sim, tmp_path)
        for admin_id in sorted(sim.workspace.admins)[:12]:
            sim.workspace.remove_admin(admin_id)
        before = store_contents(database_url)

        result = run(["sync", "--dry-run"], env, tmp_path)

        assert result.returncode == 0, result.stderr
        assert "teammates to remove (12):" in result.stdout
        assert "a real run would be blocked: mass_removal_blocked: " in result.stdout
        assert store_contents(database_url) == before

    def test_a_store_not_migrated_is_one_line_and_is_not_created(
        self, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        path = tmp_path / "fresh" / "store.db"
        result = run(["sync", "--dry-run"], service_env(f"sqlite:///{path}", sim), tmp_path)

        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "intercom-sync migrate" in line
        assert not path.exists()
        assert sim.requests() == []


class TestBlockedRunNamesWhoItWouldRemove:
    def test_the_run_object_lists_would_remove(
        self, start_service: Callable[..., ServiceServer], sim: SimulatorServer
    ) -> None:
        service = start_service()
        leavers = sorted(sim.workspace.admins.values(), key=lambda a: a.id)[:12]
        for admin in leavers:
            sim.workspace.remove_admin(admin.id)
        with service.client(OPERATOR_TOKEN) as ops:
            queued = ops.post("/resync").json()

            def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = ops.get(f"/sync-runs/{queued['id']}").json()
                return body if body["finished_at"] else None

            blocked = wait_for(finished, timeout=30, what="the blocked run")
            listed = ops.get("/sync-runs").json()["items"][0]
            # What the OpenAPI document says of a run holds for one with details.
            checker = OpenApiChecker(service)
            checker.check("get", "/sync-runs/{run_id}", ops.get(f"/sync-runs/{queued['id']}"))
            checker.check("get", "/sync-runs", ops.get("/sync-runs"))
        assert blocked["status"] == "blocked"
        assert blocked["error"]["code"] == "mass_removal_blocked"
        assert blocked["error"]["details"]["would_remove"] == [
            {"id": a.id, "name": a.name, "email": a.email} for a in leavers
        ]
        assert listed == blocked
        # A run that failed for another reason carries no details.
        sim.add_fault(path="/admins", status=401, times=5)
        with service.client(OPERATOR_TOKEN) as ops:
            failed_id = ops.post("/resync").json()["id"]
            failed = wait_for(
                lambda: (r := ops.get(f"/sync-runs/{failed_id}").json())["finished_at"] and r,
                timeout=30,
                what="the failed run",
            )
        assert set(failed["error"]) == {"code", "message"}

    def test_the_cli_lists_them_and_cuts_a_long_list(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        env = synced(database_url, sim, tmp_path)
        leavers = sorted(sim.workspace.admins.values(), key=lambda a: a.id)[:25]
        for admin in leavers:
            sim.workspace.remove_admin(admin.id)

        result = run(["sync"], env, tmp_path)

        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("sync blocked: mass_removal_blocked: ")
        start = lines.index("would remove 25 teammates:")
        shown = lines[start + 1 : start + 21]
        assert shown == [f"  - {a.id} {a.name} <{a.email}>" for a in leavers[:20]]
        assert lines[start + 21].startswith("  and 5 more (GET /sync-runs/")


def test_sync_prints_a_line_for_each_retry_and_rate_limit_wait(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    sim.add_fault(path="/admins", status=429, reset_in_seconds=0.2)
    sim.add_fault(path="/teams", status=503)
    env = service_env(database_url, sim)

    result = run(["sync"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    waits = [line for line in lines if line.startswith("  Intercom: ")]
    assert len(waits) == 2, result.stdout
    assert "GET /admins was rate limited; waiting" in waits[0]
    assert "for the rate limit to reset (attempt 2 of 3)" in waits[0]
    assert "GET /teams answered 503; retrying in" in waits[1]
    # In order, between the fetch line and the outcome.
    assert lines.index(waits[0]) > lines.index(
        "fetching workspace, teammates and teams from Intercom"
    )
    assert lines[-1].startswith("sync succeeded")
    assert SIM_TOKEN not in result.stdout + result.stderr


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run(["--version"], {}, tmp_path)

    assert result.returncode == 0
    assert result.stdout.strip() == f"intercom-sync {__version__}"


class TestCheck:
    def test_a_good_setup_is_three_ok_lines(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        upgrade_to_head(database_url)
        result = run(["check"], service_env(database_url, sim), tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "ok   configuration",
            "ok   store",
            "ok   intercom",
        ]
        assert f"workspace {sim.workspace.id_code}" in lines[2]
        assert "schema at head, never synced" in lines[1]
        assert_no_secret(result)
        assert len(sim.requests("/me")) == 1

    def test_a_refused_token_fails_on_one_line(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        upgrade_to_head(database_url)
        env = service_env(database_url, sim, INTERCOM_ACCESS_TOKEN="not-the-token-0123456789")
        result = run(["check"], env, tmp_path)

        assert result.returncode == 1
        [failure] = [x for x in result.stdout.splitlines() if x.startswith("FAIL")]
        assert failure.startswith("FAIL intercom: intercom_auth_failed: ")
        assert "not-the-token-0123456789" not in result.stdout + result.stderr
        assert_no_secret(result)

    def test_an_unreachable_store_fails_on_one_line(
        self, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        for name, url in unusable_database_urls(tmp_path).items():
            result = run(["check"], service_env(url, sim), tmp_path)

            assert result.returncode == 1, (name, result.stdout)
            [failure] = [x for x in result.stdout.splitlines() if x.startswith("FAIL")]
            assert failure.startswith("FAIL store: DATABASE_URL: "), (name, failure)
            assert "hunter2-secret" not in result.stdout + result.stderr
            assert "Traceback" not in result.stderr

    def test_an_unreachable_intercom_fails_on_one_line(
        self, database_url: str, tmp_path: Path
    ) -> None:
        upgrade_to_head(database_url)
        env = service_env(
            database_url,
            None,
            INTERCOM_ACCESS_TOKEN=SIM_TOKEN,
            INTERCOM_API_BASE_URL=f"http://127.0.0.1:{free_port()}",
        )
        result = run(["check"], env, tmp_path)

        assert result.returncode == 1
        [failure] = [x for x in result.stdout.splitlines() if x.startswith("FAIL")]
        assert failure.startswith("FAIL intercom: intercom_unavailable: ")
        assert "could not connect" in failure
        assert_no_secret(result)

    def test_a_bad_configuration_is_one_line(self, database_url: str, tmp_path: Path) -> None:
        env = service_env(database_url, None, RECONCILE_INTERVAL_SECONDS="-5")
        result = run(["check"], env, tmp_path)

        assert result.returncode == 1
        [line] = result.stdout.strip().splitlines()
        assert line.startswith("FAIL configuration: ")
        assert "RECONCILE_INTERVAL_SECONDS" in line


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (SIM_TOKEN, SIM_SECRET, READ_TOKEN, OPERATOR_TOKEN):
        assert secret not in result.stdout + result.stderr


class TestSimulatorCommand:
    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.simulator", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def test_ctrl_c_stops_it_quietly_with_exit_code_0(self) -> None:
        process = self.start("--port", "0")
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # printed once the port is bound
        assert url.startswith("http://127.0.0.1:")
        wait_for(lambda: _answers(url), timeout=30, what="the simulator to serve")

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)

        assert process.returncode == 0, err
        assert len(err.strip().splitlines()) <= 1, err
        assert "Traceback" not in err

    def test_a_busy_port_is_one_line(self) -> None:
        import socket

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            process = self.start("--port", str(port))
            out, err = process.communicate(timeout=60)
        assert process.returncode == 1
        assert out == ""
        [line] = err.strip().splitlines()
        assert f"port {port} on 127.0.0.1 is in use" in line
        assert "--port" in line


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/me", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False


class TestServiceLog:
    def json_lines(self, path: Path) -> list[dict[str, Any]]:
        entries = []
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries

    def test_a_failed_startup_sync_logs_one_warning_with_its_code(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        sim.add_fault(path="*", status=401, times=1000)
        log = tmp_path / "serve.log"
        process = ServiceProcess(service_env(database_url, sim), log_path=log).start()
        try:
            with process.client(OPERATOR_TOKEN) as ops:
                wait_for(
                    lambda: any(r["finished_at"] for r in ops.get("/sync-runs").json()["items"]),
                    timeout=30,
                    what="the start-up run to finish",
                )
        finally:
            process.terminate()
        entries = self.json_lines(log)
        [warning] = [e for e in entries if e.get("sync_status")]
        assert warning["level"] == "warning"
        assert warning["error_code"] == "intercom_auth_failed"
        assert warning["sync_status"] == "failed"
        assert warning["run_id"] == "1"
        assert "intercom_auth_failed" in warning["message"]
        assert not [e for e in entries if e["level"] in ("error", "critical")]
        assert SIM_TOKEN not in log.read_text()

    def test_run_results_are_json_fields(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        log = tmp_path / "serve.log"
        process = ServiceProcess(service_env(database_url, sim), log_path=log).start()
        try:
            wait_for(
                lambda: any(e.get("sync_status") for e in self.json_lines(log)),
                timeout=30,
                what="the start-up run's result in the log",
            )
        finally:
            process.terminate()
        [result] = [e for e in self.json_lines(log) if e.get("sync_status")]
        assert result["sync_status"] == "succeeded"
        assert (result["version_before"], result["version_after"]) == (0, 1)
        assert result["users_added"] == 30
        assert result["teams_added"] == 6
        assert result["memberships_removed"] == 0
        assert "{" not in result["message"]  # no dict repr in the text either
