"""The tables, as SQLAlchemy Core sees them; migrations/ creates and changes them (Alembic)."""

from __future__ import annotations

import sqlalchemy as sa

ID_LENGTH = 64
LABEL_LENGTH = 200
NOTE_LENGTH = 500  # a short note: what the grower saw, not an essay

metadata = sa.MetaData()

diagnoses = sa.Table(
    "diagnoses",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),  # secrets.token_urlsafe: unguessable
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(LABEL_LENGTH), nullable=False),
    sa.Column("model_version", sa.String(LABEL_LENGTH), nullable=False),
    sa.Column("label", sa.String(LABEL_LENGTH), nullable=False),  # the answer's label, for export without JSON
    sa.Column("answer", sa.JSON, nullable=False),  # the diagnosis as the API answered it
    sa.Column("photo", sa.String(ID_LENGTH + 8), nullable=True),  # key in the photo store
    sa.Column("correct", sa.Boolean, nullable=True),  # the grower's feedback; null until given
    sa.Column("corrected_label", sa.String(LABEL_LENGTH), nullable=True),
    sa.Column("note", sa.String(NOTE_LENGTH), nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
)
