"""Usage evidence from Intercom's admin activity log (spec §11).

- `user.last_login_method`: `metadata.sign_in_method` of the sign-in behind `last_login_at`.
- `access_event`: access events read from the log or its webhooks, keyed by the log entry's
  id (so overlapping reads store each once), with keyset indexes for
  `GET /api/v1/access-events` (by time, by teammate, by type) and for the retention prune.
- `activity_log_cursor`: one row, how far the log has been read and the last read's outcome.
- The `c1_user` view baton-sql reads gains `last_login_method` (its other columns as in 0002).

The column is added, not rebuilt: `user` is never rebuilt on SQLite; only the view is dropped
and created again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 22:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.types.TypeEngine[object]:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("user", sa.Column("last_login_method", sa.String(64), nullable=True))
    op.execute("DROP VIEW IF EXISTS c1_user")
    op.execute(_c1_user_view_with_method(op.get_bind().dialect.name))
    op.create_table(
        "access_event",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor_email", sa.String(512), nullable=True),
        sa.Column("actor_ip", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_event"),
    )
    op.create_index("ix_access_event_at_id", "access_event", ["at", "id"])
    op.create_index("ix_access_event_user_at", "access_event", ["user_id", "at", "id"])
    op.create_index("ix_access_event_type_at", "access_event", ["type", "at", "id"])
    op.create_table(
        "activity_log_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("read_to", _utc(), nullable=True),
        sa.Column("last_attempt_at", _utc(), nullable=True),
        sa.Column("last_success_at", _utc(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("entries_read", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activity_log_cursor"),
    )


def downgrade() -> None:
    op.drop_table("activity_log_cursor")
    op.drop_index("ix_access_event_type_at", table_name="access_event")
    op.drop_index("ix_access_event_user_at", table_name="access_event")
    op.drop_index("ix_access_event_at_id", table_name="access_event")
    op.drop_table("access_event")
    # SQLite drops a column by rebuilding the table, and a view over it must not stand then.
    op.execute("DROP VIEW IF EXISTS c1_user")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("last_login_method")
    _recreate_c1_user_view()


def _migration_0002() -> Any:
    # The view's text has one home, migration 0002; load it by path (its module name starts
    # with a digit, and `migrations/` is not a package).
    path = Path(__file__).with_name("20261206_0002_c1_reader_view_and_role_index.py")
    spec = importlib.util.spec_from_file_location("_migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _c1_user_view_with_method(dialect: str) -> str:
    """0002's view with `last_login_method` ('' when unknown) after its last column."""
    text: str = _migration_0002()._c1_user_view(dialect)
    anchor = "  u.role_id\n"
    assert anchor in text
    return text.replace(
        anchor, "  u.role_id,\n  COALESCE(u.last_login_method, '') AS last_login_method\n"
    )


def _recreate_c1_user_view() -> None:
    op.execute(_migration_0002()._c1_user_view(op.get_bind().dialect.name))
