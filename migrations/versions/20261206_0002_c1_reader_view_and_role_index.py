"""C1 readers: the `c1_user` view baton-sql reads, and an index for one role's holders.

`c1_user` is the active teammates with every column C1 maps already text: baton-sql keeps a Go
string as it is and formats any other value with `%s` (pkg/bcel/bcel.go, EvaluateString), so a
boolean would arrive as "%!s(bool=true)", a NULL as "NULL_VALUE" and a timestamp as Go's
`time.Time` text, which its last-login parser does not read (pkg/bsql/helpers.go). The view
gives both backends the same columns, so integrations/c1/baton-sql.yaml is one set of SQL, and
a read-only role needs SELECT on it instead of on "user" (tombstones, watermarks).

A later migration that rebuilds "user" (SQLite batch mode copies and renames the table) must
drop this view first and create it again afterwards.

`ix_user_role_id` serves `GET /api/v1/roles/{id}/members` and the role-grant pages, which
otherwise scan every teammate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 12:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# RFC 3339 in UTC, whole seconds: what /api/v1/snapshot prints for `last_login_at`.
_LAST_LOGIN = {
    "postgresql": (
        "to_char(u.last_login_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    ),
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%SZ', u.last_login_at)",
}


def _c1_user_view(dialect: str) -> str:
    return f"""
CREATE VIEW c1_user AS
SELECT
  u.id,
  COALESCE(NULLIF(u.name, ''), u.email, u.id) AS display_name,
  COALESCE(u.email, '') AS email,
  u.account_type,
  COALESCE(u.job_title, '') AS job_title,
  CASE WHEN u.has_inbox_seat THEN 'true' ELSE 'false' END AS has_inbox_seat,
  CASE WHEN u.away_mode_enabled THEN 'true' ELSE 'false' END AS away_mode_enabled,
  CASE WHEN u.away_mode_reassign THEN 'true' ELSE 'false' END AS away_mode_reassign,
  COALESCE({_LAST_LOGIN[dialect]}, '') AS last_login,
  u.role_id
FROM "user" u
WHERE u.removed_at IS NULL
"""


def upgrade() -> None:
    op.create_index("ix_user_role_id", "user", ["role_id", "id"], unique=False)
    op.execute(_c1_user_view(op.get_bind().dialect.name))


def downgrade() -> None:
    op.execute("DROP VIEW c1_user")
    op.drop_index("ix_user_role_id", table_name="user")
