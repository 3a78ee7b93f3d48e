"""An empty database for one test or one benchmark scenario: a SQLite file, or a database of its
own on a PostgreSQL server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.store.engine import normalize_database_url


def database_server() -> str | None:
    """The PostgreSQL server the tests run on (TEST_DATABASE_URL), or None for SQLite files."""
    return os.environ.get("TEST_DATABASE_URL", "").strip() or None


@contextmanager
def fresh_database(
    server_url: str | None, folder: Path, *, name: str = "store", prefix: str = "t"
) -> Iterator[str]:
    """The URL of an empty database: `folder/{name}.db` without a server, else a new database
    named `{prefix}_` and a random suffix on `server_url`, dropped (connections and all) when
    the block ends."""
    if server_url is None:
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    database = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(normalize_database_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        yield make_url(server_url).set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
