"""Provisioning (spec §10): the audit record of every write request C1 makes.

`provisioning_request` holds one row per call of `DELETE /api/v1/users/{id}` and
`PUT`/`DELETE /api/v1/teams/{id}/members/{user_id}`, written before Intercom is called and
finished after. `idempotency_key` is unique per token fingerprint (`requested_by`), so a
repeated `Idempotency-Key` finds the first answer; `request_hash` tells a repeat from another
request under the same key.

Writes to one team are serialized across replicas without a table: a PostgreSQL advisory lock
on the team id, or on SQLite a file lock beside the database (see app/store/provisioning.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provisioning_request",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("result", sa.String(32), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_by", sa.String(12), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("intercom_method", sa.String(8), nullable=True),
        sa.Column("intercom_path", sa.Text(), nullable=True),
        sa.Column("intercom_body", sa.JSON(), nullable=True),
        sa.Column("intercom_status", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_request")),
        sa.UniqueConstraint(
            "idempotency_key",
            "requested_by",
            name=op.f("uq_provisioning_request_idempotency"),
        ),
    )


def downgrade() -> None:
    op.drop_table("provisioning_request")
