"""Create the diagnoses table: each kept diagnosis, its photo's key and the grower's feedback.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "diagnoses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("photo", sa.String(72), nullable=True),
        sa.Column("correct", sa.Boolean, nullable=True),
        sa.Column("corrected_label", sa.String(200), nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_diagnoses_created_at", "diagnoses", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_diagnoses_created_at", table_name="diagnoses")
    op.drop_table("diagnoses")
