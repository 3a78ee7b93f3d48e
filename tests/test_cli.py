"""The command line as real subprocesses: `sync`, `migrate`, `alembic upgrade head`
from the repository root, and `serve` migrating an empty database before it listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.simulator import SimulatorServer
from app.store import sync_runs
from app.store.engine import create_database, create_migration_engine
from app.store.migrate import alembic_config
from harness.service import ROOT, SIM_TOKEN, ServiceProcess, service_env
from harness.waiting import free_port, wait_for

BIN = Path(sys.executable).parent
INTERCOM_SYNC = BIN / "intercom-sync"
ALEMBIC = BIN / "alembic"


def run(args: list[str | Path], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def schema_revision(database_url: str) -> str | None:
    engine = create_migration_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


class TestSync:
    def test_sync_prints_progress_and_exits_0(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        result = run([INTERCOM_SYNC, "sync"], service_env(database_url, sim), tmp_path)

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) >= 4  # one line per stage, then the outcome
        assert any("30 teammates" in line and "6 teams" in line for line in lines)
        assert lines[-1].startswith("sync succeeded")
        db = create_database(database_url)
        try:
            with db.reading() as session:
                (run_view,) = sync_runs.list_runs(session, limit=10)
        finally:
            db.dispose()
        assert (run_view.trigger, run_view.status) == ("cli", "succeeded")
        assert run_view.stats["users_added"] == 30

    def test_a_refused_token_exits_non_zero_with_a_one_line_reason(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        sim.add_fault(path="*", status=401, times=1000)
        result = run([INTERCOM_SYNC, "sync"], service_env(database_url, sim), tmp_path)

        assert result.returncode != 0
        reason = result.stderr.strip().splitlines()[-1]
        assert "intercom_auth_failed" in reason
        assert SIM_TOKEN not in result.stdout + result.stderr
        assert len(sim.requests()) == 1


class TestMigrate:
    def test_migrate_brings_an_empty_database_to_head(
        self, database_url: str, tmp_path: Path
    ) -> None:
        result = run([INTERCOM_SYNC, "migrate"], service_env(database_url, None), tmp_path)

        assert result.returncode == 0, result.stderr
        assert schema_revision(database_url) == head_revision(database_url)

    def test_alembic_upgrade_head_works_from_the_repository_root(self, database_url: str) -> None:
        result = run([ALEMBIC, "upgrade", "head"], {"DATABASE_URL": database_url}, ROOT)

        assert result.returncode == 0, result.stderr
        assert schema_revision(database_url) == head_revision(database_url)


class TestServe:
    def test_serve_migrates_an_empty_database_before_listening(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        assert schema_revision(database_url) is None
        process = ServiceProcess(service_env(database_url, sim), log_path=tmp_path / "serve.log")
        process.start()
        try:
            # Listening already implies the schema is in place.
            assert schema_revision(database_url) == head_revision(database_url)

            def ready() -> bool:
                return httpx.get(f"{process.url}/readyz", timeout=5).status_code == 200

            wait_for(ready, timeout=30, what="the served baseline")
            with process.client() as client:
                assert client.get("/api/v1/snapshot").json()["version"] == 1
        finally:
            process.terminate()


class TestSyncForceAndStats:
    def test_stats_are_printed_once_as_lines_and_force_passes_the_brake(
        self, database_url: str, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        env = service_env(database_url, sim)
        first = run([INTERCOM_SYNC, "sync"], env, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "{" not in first.stdout  # no Python dict, no JSON
        assert "  teammates:   30 added, 0 updated, 0 removed" in first.stdout.splitlines()
        assert first.stdout.count("added") == 3  # teammates, teams, memberships: once each

        leavers = [a.id for a in sim.workspace.admins.values()][:12]
        for admin_id in leavers:
            sim.workspace.remove_admin(admin_id)
        blocked = run([INTERCOM_SYNC, "sync"], env, tmp_path)
        assert blocked.returncode == 1
        reason = blocked.stderr.strip().splitlines()[-1]
        assert reason.startswith("sync blocked: mass_removal_blocked: ")
        assert "intercom-sync sync --force" in reason

        forced = run([INTERCOM_SYNC, "sync", "--force"], env, tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert "  teammates:   0 added, 0 updated, 12 removed" in forced.stdout.splitlines()
        db = create_database(database_url)
        try:
            with db.reading() as session:
                runs = sync_runs.list_runs(session, limit=10)
        finally:
            db.dispose()
        assert [(r.status, r.force) for r in runs] == [
            ("succeeded", True),
            ("blocked", False),
            ("succeeded", False),
        ]


def unusable_database_urls(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {
        # Root may write anywhere, so the folder is made impossible rather than read-only.
        "sqlite folder that cannot be made": f"sqlite:///{blocker}/store/intercom-sync.db",
        "postgres that does not answer": (
            f"postgresql://sync:hunter2-secret@127.0.0.1:{free_port()}/intercom"
        ),
    }


class TestStartupErrors:
    def test_an_unusable_database_url_is_one_line_naming_it_for_every_command(
        self, sim: SimulatorServer, tmp_path: Path
    ) -> None:
        for name, url in unusable_database_urls(tmp_path).items():
            for command in (["serve", "--port", str(free_port())], ["sync"], ["migrate"]):
                result = run([INTERCOM_SYNC, *command], service_env(url, sim), tmp_path)
                where = (name, command[0], result.stderr)
                assert result.returncode == 2, where
                assert "Traceback" not in result.stderr, where
                [line] = [x for x in result.stderr.splitlines() if x.strip()]
                assert line.startswith("intercom-sync: DATABASE_URL: cannot open the store"), where
                assert "hunter2-secret" not in result.stdout + result.stderr, where
