"""The first schema: jobs, notes, codes under review, append-only audit.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_NOW = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("profile", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", _NOW, nullable=False),
        sa.Column("updated_at", _NOW, nullable=False),
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(200), nullable=False, index=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("translation", sa.Text, nullable=False),
        sa.Column("profile", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("record", sa.JSON, nullable=True),
        sa.Column("model_version", sa.String(80), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=True, index=True),
        sa.Column("position", sa.Integer, nullable=True),
        sa.Column("created_at", _NOW, nullable=False),
        sa.Column("updated_at", _NOW, nullable=False),
        sa.UniqueConstraint("job_id", "position", name="uq_notes_job_position"),
    )
    op.create_table(
        "codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("note_id", sa.String(32), sa.ForeignKey("notes.id"), nullable=False, index=True),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("original_code", sa.String(16), nullable=True),
        sa.Column("assertion", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("sentence_evidence", sa.JSON, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("note_id", sa.String(32), sa.ForeignKey("notes.id"), nullable=False, index=True),
        sa.Column("code_id", sa.Integer, nullable=True),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("at", _NOW, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("model_version", sa.String(80), nullable=True),
    )
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit "
                "BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for table in ("audit", "codes", "notes", "jobs"):
        op.drop_table(table)
