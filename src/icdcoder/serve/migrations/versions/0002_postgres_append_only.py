"""Append-only audit on PostgreSQL: triggers refuse to update, delete or truncate audit rows (SQLite has had its
triggers since the first schema; there this revision changes nothing).

Revision ID: 0002_postgres_append_only
Revises: 0001_initial
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0002_postgres_append_only"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_FUNCTION = "icdcoder_audit_append_only"


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _on_postgresql():
        return
    op.execute(
        f"CREATE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit rows are append-only'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION {_FUNCTION}()"
    )
    op.execute(f"CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit EXECUTE FUNCTION {_FUNCTION}()")


def downgrade() -> None:
    if not _on_postgresql():
        return
    op.execute("DROP TRIGGER IF EXISTS audit_no_truncate ON audit")
    op.execute("DROP TRIGGER IF EXISTS audit_no_change ON audit")
    op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")
