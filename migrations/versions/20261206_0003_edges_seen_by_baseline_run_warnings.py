"""Edges and trust: which teammates a baseline has seen, and what a run reports beyond its stats.

- `user.seen_by_baseline`: true once any baseline listed the teammate. A teammate that only
  webhooks announced (a stale, replayed or forged `admin.added_to_workspace`) and that the next
  baseline does not list is dropped without counting toward the mass-removal brake. Rows that
  exist before this migration came from baselines or from real notifications the reconciles
  have confirmed since, so they start as seen.
- `sync_run.warnings`: items a run could not store (`[{"resource_type", "id", "reason"}]`),
  left as they were while the rest applied.
- `sync_run.error_details`: structured detail of a failure, e.g. a blocked run's
  `would_remove` list, so an operator sees who before pressing force.

Columns are added, not rebuilt, so the `c1_user` view of 0002 is untouched on SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 21:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "user",
        sa.Column("seen_by_baseline", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("sync_run", sa.Column("warnings", sa.JSON(), nullable=True))
    op.add_column("sync_run", sa.Column("error_details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("error_details")
        batch.drop_column("warnings")
    # SQLite drops a column by rebuilding the table, and a view over it must not stand then.
    op.execute("DROP VIEW IF EXISTS c1_user")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("seen_by_baseline")
    _recreate_c1_user_view()


def _recreate_c1_user_view() -> None:
    # The view's text has one home, migration 0002; load it by path (its module name starts
    # with a digit, and `migrations/` is not a package).
    path = Path(__file__).with_name("20261206_0002_c1_reader_view_and_role_index.py")
    spec = importlib.util.spec_from_file_location("_migration_0002", path)
    assert spec is not None and spec.loader is not None
    migration_0002 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration_0002)
    op.execute(migration_0002._c1_user_view(op.get_bind().dialect.name))
