"""`intercom-sync check`: the configuration, the store and Intercom's `GET /me`, one line each.

Nothing is written: the store is read (its schema revision and state), never migrated, and a
SQLite file that does not exist yet is not created. Intercom is asked once, without retries:
a check says how things are now. No line carries a secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.intercom.client import IntercomClient
from app.intercom.errors import IntercomError
from app.intercom.retries import RetryPolicy
from app.settings import Settings, startup_warnings
from app.store.engine import create_database, is_sqlite, normalize_database_url
from app.store.migrate import (
    MigrationsNotFound,
    _safe_url,
    alembic_config,
    describe_store_error,
)
from app.store.versioning import read_store_state


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def check_configuration(settings: Settings) -> CheckResult:
    warnings = startup_warnings(settings)
    if warnings:
        more = f" (and {len(warnings) - 1} more warnings)" if len(warnings) > 1 else ""
        return CheckResult("configuration", True, f"loaded; warning: {warnings[0]}{more}")
    return CheckResult("configuration", True, "loaded, no warnings")


def check_store(database_url: str) -> CheckResult:
    where = _safe_url(database_url)
    try:
        missing = _missing_sqlite_file(database_url)
        if missing is not None:
            return missing
        head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
        db = create_database(database_url, pool_size=1)
        try:
            with db.engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
                if revision is None or not inspect(connection).has_table("store_state"):
                    return CheckResult(
                        "store",
                        True,
                        f"{where} is reachable and empty; `serve` or `migrate` creates the schema",
                    )
                if revision != head:
                    return CheckResult(
                        "store",
                        True,
                        f"{where}: schema at {revision}, behind {head} "
                        "(`serve` or `migrate` upgrades it)",
                    )
            with db.reading() as session:
                state = read_store_state(session)
                version, workspace = state.version, state.workspace_id
        finally:
            db.dispose()
    except MigrationsNotFound as exc:
        return CheckResult("store", False, str(exc))
    except (OSError, DBAPIError, ArgumentError) as exc:
        return CheckResult("store", False, describe_store_error(database_url, exc))
    holds = f"workspace {workspace}, version {version}" if workspace else "never synced"
    return CheckResult("store", True, f"{where}: schema at head, {holds}")


def _missing_sqlite_file(database_url: str) -> CheckResult | None:
    """A SQLite file not there yet is fine if it can be made; connecting would create it."""
    url = normalize_database_url(database_url)
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database.startswith("file:") or Path(database).exists():
        return None
    folder = Path(database).resolve().parent
    while not folder.exists():
        folder = folder.parent
    where = _safe_url(database_url)
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return CheckResult(
            "store", True, f"{where} does not exist yet; `serve` or `migrate` creates it"
        )
    return CheckResult(
        "store",
        False,
        f"DATABASE_URL: {where} does not exist and {folder} is not a writable folder",
    )


async def check_intercom(settings: Settings) -> CheckResult:
    token = settings.intercom_access_token
    if token is None:
        return CheckResult("intercom", False, "INTERCOM_ACCESS_TOKEN is not set")
    client = IntercomClient(
        base_url=settings.intercom_api_base_url,
        access_token=token.get_secret_value(),
        api_version=settings.intercom_api_version,
        timeout_seconds=min(settings.intercom_timeout_seconds, 15.0),
        retry=RetryPolicy(max_attempts=1),
    )
    try:
        workspace = await client.get_workspace()
    except IntercomError as exc:
        return CheckResult("intercom", False, f"{exc.code}: {exc.message}")
    finally:
        await client.aclose()
    expected = settings.intercom_workspace_id
    if expected and workspace.id_code != expected:
        return CheckResult(
            "intercom",
            False,
            f"the token reads workspace {workspace.id_code}, not INTERCOM_WORKSPACE_ID={expected}",
        )
    region = f", region {workspace.region}" if workspace.region else ""
    return CheckResult(
        "intercom",
        True,
        f"GET /me answered: workspace {workspace.id_code} ({workspace.name}{region}) "
        f"at {settings.intercom_api_base_url}",
    )


def store_is_at_head(database_url: str) -> bool:
    """Whether the store exists with the latest schema (without creating or migrating it).
    Raises what opening it raises (OSError, DBAPIError, ArgumentError, MigrationsNotFound)."""
    url = normalize_database_url(database_url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and not database.startswith("file:") and not Path(database).exists():
            return False
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    db = create_database(database_url, pool_size=1)
    try:
        with db.engine.connect() as connection:
            return bool(MigrationContext.configure(connection).get_current_revision() == head)
    finally:
        db.dispose()
