"""Bulk reads and writes straight through the database driver, for the few paths that move tens
of thousands of rows (a first baseline, the directory it diffs against, the change log). Going
through SQLAlchemy's result rows and executemany costs a Python object or parameter dict per row,
several times what the database itself spends; these take and give plain tuples instead."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Column, Connection, Select, Table
from sqlalchemy.orm import Session

AnySelect = Select[*tuple[Any, ...]]


def driver_rows(connection: Connection, statement: AnySelect) -> list[tuple[Any, ...]]:
    """The rows of a statement without parameters, as the driver's plain tuples: no type
    processing (see `typed_driver_rows`)."""
    compiled = statement.compile(dialect=connection.dialect)
    if compiled.params:
        raise ValueError("driver_rows runs statements without bound parameters only")
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    # Both drivers give plain tuples by default; anything else would be copied into them.
    if rows and type(rows[0]) is not tuple:
        return [tuple(row) for row in rows]
    return cast(list[tuple[Any, ...]], rows)


def typed_driver_rows(connection: Connection, statement: AnySelect) -> list[tuple[Any, ...]]:
    """`driver_rows` with each value passed through its column's result processor (booleans,
    UTC datetimes) as SQLAlchemy would, NULLs left as they are."""
    dialect = connection.dialect
    processors = [
        (index, process)
        for index, column in enumerate(statement.selected_columns)
        if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
        is not None
    ]
    rows = driver_rows(connection, statement)
    if not processors:
        return rows
    typed: list[tuple[Any, ...]] = []
    for raw in rows:
        row = list(raw)
        for index, process in processors:
            if row[index] is not None:
                row[index] = process(row[index])
        typed.append(tuple(row))
    return typed


# Page cache of a connection during a bulk write (SQLite's default is 2 MiB). A first baseline
# of a large workspace writes many times that in pages; with the default cache SQLite spills
# dirty pages into the WAL mid-transaction and reads them back as it keeps writing.
BULK_WRITE_CACHE_KIB = 131_072


@contextmanager
def bulk_write_cache(session: Session) -> Iterator[None]:
    """On SQLite, a page cache big enough for a bulk write, for as long as the block runs; the
    connection's own size is restored after, so a pooled connection does not keep it. Dirty
    pages stay in the cache until the commit whatever its size, so restoring before the
    commit is safe."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    connection.exec_driver_sql(f"PRAGMA cache_size = -{BULK_WRITE_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def bulk_value(session: Session, column: Column[Any], value: Any) -> Any:
    """`value` for `column` in `bulk_insert`'s rows: what SQLAlchemy would bind. On PostgreSQL
    a datetime becomes its ISO 8601 text, which COPY parses to the same timestamptz, because
    psycopg adapting a datetime object costs more than the rest of a change-log row: for a
    value repeated in every row (a change log's `at`), call this once, not per row."""
    dialect = session.get_bind().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    bound = process(value) if process is not None else value
    if dialect.name == "postgresql" and isinstance(bound, datetime):
        return bound.isoformat()
    return bound


def bulk_insert(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows of `columns` straight through the driver, in the session's transaction.

    A first baseline inserts ~120,000 rows (teammates, memberships, change log). Going through
    SQLAlchemy's executemany costs a parameter dict per row built and checked twice, and on
    psycopg a pipelined statement per row, all in Python: several times what the database
    itself spends. So: tuples to SQLite's C `executemany`, and `COPY` on PostgreSQL.

    No type processing happens here: values must be what the driver takes for the column
    (str, int, bool and None are; a datetime goes through `bulk_value`). Columns left out
    get NULL or their server default, so every column with a Python-side default must be given.
    """
    connection = session.connection()
    dialect = connection.dialect
    names = ", ".join(dialect.identifier_preparer.quote(name) for name in columns)
    target = dialect.identifier_preparer.format_table(table)
    cursor = connection.connection.cursor()
    try:
        if dialect.name == "postgresql":
            with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            cursor.executemany(f"INSERT INTO {target} ({names}) VALUES ({marks})", rows)
    finally:
        cursor.close()
