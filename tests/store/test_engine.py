"""The store's engine at shutdown: nothing it handed out is left open for the garbage collector."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.store.engine import create_database


def test_a_connection_returned_after_dispose_is_closed(database_url: str) -> None:
    # At shutdown a worker thread can still hold a connection when the store is disposed (its
    # awaiting task was cancelled, the thread was not); when it gives the connection back, the
    # connection must be closed, not parked open in a pool nothing uses any more.
    db = create_database(database_url)
    connection = db.engine.connect()
    connection.execute(text("SELECT 1"))
    raw = connection.connection.dbapi_connection
    assert raw is not None
    db.dispose()
    connection.close()
    with pytest.raises(Exception, match="(?i)closed"):
        raw.cursor().execute("SELECT 1")


def test_a_store_disposed_twice_and_used_again_still_works(database_url: str) -> None:
    db = create_database(database_url)
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    db.dispose()
    db.dispose()
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    db.dispose()
