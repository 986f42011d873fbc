"""Candidates: the codes the coder scored below its threshold, one row per note and rank. A note coded before this
revision gets the candidates its stored record holds (records written before candidates hold none).

Revision ID: 0003_candidates
Revises: 0002_postgres_append_only
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_candidates"
down_revision = "0002_postgres_append_only"
branch_labels = None
depends_on = None

#: notes read at a time while filling the table (their records are held in memory meanwhile)
_PAGE = 500

_notes = sa.table("notes", sa.column("id", sa.String), sa.column("record", sa.JSON))
_candidates = sa.table(
    "candidates",
    sa.column("note_id", sa.String),
    sa.column("rank", sa.Integer),
    sa.column("code", sa.String),
    sa.column("system", sa.String),
    sa.column("score", sa.Float),
)


def upgrade() -> None:
    op.create_table(
        "candidates",
        sa.Column("note_id", sa.String(32), sa.ForeignKey("notes.id"), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    _fill_from_records()


def _fill_from_records() -> None:
    """Each stored record's ``candidates`` as rows, a page of notes at a time (in the order of their ids)."""
    bind = op.get_bind()
    last = ""
    while True:
        page = bind.execute(
            sa.select(_notes.c.id, _notes.c.record).where(_notes.c.id > last).order_by(_notes.c.id).limit(_PAGE)
        ).all()
        if not page:
            return
        rows = [
            {"note_id": note_id, "rank": rank, "code": c["code"], "system": c["system"], "score": float(c["score"])}
            for note_id, record in page
            if isinstance(record, dict)
            for rank, c in enumerate(record.get("candidates", []))
        ]
        if rows:
            bind.execute(_candidates.insert(), rows)
        last = page[-1][0]


def downgrade() -> None:
    op.drop_table("candidates")
