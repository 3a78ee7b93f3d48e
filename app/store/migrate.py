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

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MigrationsNotFound(RuntimeError):
    """No alembic.ini with a migrations/ folder beside it was found."""


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


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
