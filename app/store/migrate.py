"""Run alembic from code (for `serve`, `migrate` and the tests) with the repository's config.

`alembic.ini` and `migrations/` live at the repository root, beside the `app` package in a
checkout. An installed package (a wheel in site-packages, the container's virtualenv) has no
such neighbours, so the config is looked for in order: `$ALEMBIC_CONFIG` (alembic's own
variable; when set it is the only place looked at), beside the package, then the current
working directory (the container's WORKDIR).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MigrationsNotFound(RuntimeError):
    """No alembic.ini with a migrations/ folder beside it was found."""


class StoreUnavailable(RuntimeError):
    """The store of DATABASE_URL cannot be opened or migrated; the message is one line that
    names the variable and the cause, never the password."""


def _usable(ini: Path) -> bool:
    return ini.is_file() and (ini.parent / "migrations" / "env.py").is_file()


def find_alembic_ini() -> Path:
    """The alembic.ini to migrate with (see the module docstring for the search order)."""
    explicit = os.environ.get("ALEMBIC_CONFIG", "").strip()
    if explicit:
        candidates = [Path(explicit)]
    else:
        candidates = [PROJECT_ROOT / "alembic.ini", Path.cwd() / "alembic.ini"]
    for ini in candidates:
        if _usable(ini):
            return ini.resolve()
    looked_at = [str(ini) for ini in candidates]
    raise MigrationsNotFound(
        "cannot find alembic.ini with a migrations/ folder beside it (looked at "
        + ", ".join(looked_at)
        + "); run from the folder that holds them or set ALEMBIC_CONFIG to that alembic.ini"
    )


def alembic_config(database_url: str) -> Config:
    ini = find_alembic_ini()
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def prepare_store(database_url: str) -> None:
    """Migrate the store to head, turning the ways a DATABASE_URL can be unusable (a folder
    that cannot be written, a server that does not answer, a refused login) into
    StoreUnavailable rather than a traceback."""
    try:
        upgrade_to_head(database_url)
    except (OSError, DBAPIError, ArgumentError) as exc:
        raise StoreUnavailable(describe_store_error(database_url, exc)) from exc


def describe_store_error(database_url: str, exc: BaseException) -> str:
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    # Drivers write several lines (psycopg adds hints); the first says what happened.
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    hint = ""
    if "unable to open database file" in reason or isinstance(cause, PermissionError):
        hint = " (is its folder writable by this user?)"
    return f"DATABASE_URL: cannot open the store at {_safe_url(database_url)}: {reason}{hint}"


def _safe_url(database_url: str) -> str:
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
