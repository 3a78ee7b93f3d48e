"""Migrations run up from an empty database and down to an empty one on this run's backend
(SQLite, or PostgreSQL with TEST_DATABASE_URL), leave exactly the schema the models describe,
can run from several processes at once, and are found outside a checkout (the container)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.store import migrate
from app.store.engine import create_migration_engine
from app.store.migrate import MigrationsNotFound, downgrade_to_base, upgrade_to_head
from app.store.models import Base
from harness.service import ROOT

MODEL_TABLES = set(Base.metadata.tables)


def table_names(database_url: str) -> set[str]:
    engine = create_migration_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def view_names(database_url: str) -> set[str]:
    engine = create_migration_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_view_names())
    finally:
        engine.dispose()


# Views are not models (autogenerate compares tables only): listed here so none goes missing.
MIGRATION_VIEWS = {"c1_user"}


def schema_differences(database_url: str) -> list[object]:
    """What `alembic check` compares: the migrated schema against the models."""
    engine = create_migration_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "target_metadata": Base.metadata}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def head_revisions(database_url: str) -> list[str]:
    engine = create_migration_engine(database_url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def subprocess_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "ALEMBIC_CONFIG"}
    return {**env, "DATABASE_URL": database_url, **extra}


class TestUpAndDown:
    def test_upgrade_from_empty_creates_exactly_the_models_schema(self, database_url: str) -> None:
        assert table_names(database_url) == set()
        upgrade_to_head(database_url)
        assert table_names(database_url) == MODEL_TABLES | {"alembic_version"}
        assert view_names(database_url) == MIGRATION_VIEWS
        assert schema_differences(database_url) == []

    def test_upgrade_at_head_changes_nothing(self, database_url: str) -> None:
        upgrade_to_head(database_url)
        heads = head_revisions(database_url)
        upgrade_to_head(database_url)
        assert head_revisions(database_url) == heads
        assert len(heads) == 1
        assert schema_differences(database_url) == []

    def test_downgrade_to_base_empties_the_database_and_upgrade_restores_it(
        self, database_url: str
    ) -> None:
        upgrade_to_head(database_url)
        downgrade_to_base(database_url)
        # alembic keeps its (now empty) bookkeeping table; every table of ours is gone.
        assert table_names(database_url) <= {"alembic_version"}
        assert view_names(database_url) == set()
        assert head_revisions(database_url) == []
        upgrade_to_head(database_url)
        assert view_names(database_url) == MIGRATION_VIEWS
        assert schema_differences(database_url) == []


def test_alembic_command_line_upgrades_from_the_repository_root(database_url: str) -> None:
    """: `alembic upgrade head` works from the root with the same DATABASE_URL."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=subprocess_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert schema_differences(database_url) == []


def test_processes_starting_together_migrate_once_without_failing(database_url: str) -> None:
    """Replicas started at the same moment all migrate the same fresh database: one does
    the work (PostgreSQL advisory lock, SQLite write lock) and the others find it at head."""
    code = "import sys; from app.store.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            cwd=ROOT,
            env=subprocess_env(database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outcomes = [(process.wait(120), process.communicate()[1]) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [code for code, _ in outcomes] == [0, 0], [err for _, err in outcomes]
    assert len(head_revisions(database_url)) == 1
    assert schema_differences(database_url) == []


class TestFindingTheMigrations:
    """An installed package has no alembic.ini beside it (site-packages, the container's
    virtualenv): migrate.py also honours ALEMBIC_CONFIG and the working directory."""

    @staticmethod
    def copy_migrations(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "alembic.ini", folder / "alembic.ini")
        shutil.copytree(
            ROOT / "migrations", folder / "migrations", ignore=shutil.ignore_patterns("__pycache__")
        )
        return folder / "alembic.ini"

    def test_the_working_directory_is_searched_when_the_package_has_no_neighbours(
        self, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        workdir = tmp_path / "workdir"
        ini = self.copy_migrations(workdir)
        monkeypatch.setattr(migrate, "PROJECT_ROOT", tmp_path / "site-packages")
        monkeypatch.delenv("ALEMBIC_CONFIG", raising=False)
        monkeypatch.chdir(workdir)
        assert migrate.find_alembic_ini() == ini.resolve()
        upgrade_to_head(database_url)
        assert schema_differences(database_url) == []

    def test_alembic_config_names_the_file_wherever_the_process_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ini = self.copy_migrations(tmp_path / "elsewhere")
        monkeypatch.setattr(migrate, "PROJECT_ROOT", tmp_path / "site-packages")
        monkeypatch.setenv("ALEMBIC_CONFIG", str(ini))
        monkeypatch.chdir(tmp_path)
        assert migrate.find_alembic_ini() == ini.resolve()

    def test_nothing_found_is_an_error_that_says_where_it_looked_and_what_to_set(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(migrate, "PROJECT_ROOT", tmp_path / "site-packages")
        monkeypatch.delenv("ALEMBIC_CONFIG", raising=False)
        monkeypatch.chdir(tmp_path)
        with pytest.raises(MigrationsNotFound, match="ALEMBIC_CONFIG") as raised:
            migrate.find_alembic_ini()
        assert str(tmp_path / "site-packages" / "alembic.ini") in str(raised.value)

    def test_the_container_layout_migrates_through_the_installed_console_entry(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """The image's layout: the package alone in the virtualenv, alembic.ini and
        migrations/ in /app, ALEMBIC_CONFIG=/app/alembic.ini (see the Dockerfile)."""
        site = tmp_path / "venv-site-packages"
        shutil.copytree(ROOT / "app", site / "app", ignore=shutil.ignore_patterns("__pycache__"))
        ini = self.copy_migrations(tmp_path / "image" / "app")
        elsewhere = tmp_path / "elsewhere"  # not /app: ALEMBIC_CONFIG alone must be enough
        elsewhere.mkdir()
        env = subprocess_env(database_url, PYTHONPATH=str(site), ALEMBIC_CONFIG=str(ini))

        # One process: where the package is imported from, then the CLI's migrate command.
        code = (
            "import sys, app.store.migrate as m; print(m.__file__, flush=True); "
            "from app.cli import main; sys.exit(main(['migrate']))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        imported_from = result.stdout.splitlines()[0]
        assert imported_from == str(site / "app" / "store" / "migrate.py")
        assert schema_differences(database_url) == []
