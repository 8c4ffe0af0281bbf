"""The feedback database behind SQLAlchemy: SQLite in a file by default, PostgreSQL for several replicas.

Plain synchronous calls; util.feedback.store calls them from its one writer thread and
training.feedback from the export command. ``migrate`` applies the Alembic migrations shipped in
migrations/ (idempotent; the service runs it at start).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from util.feedback.schema import diagnoses

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30  # several processes on one SQLite file wait for each other's writes


@dataclass(frozen=True)
class Feedback:
    """What the grower said of a diagnosis: right, or wrong and (maybe) what it really is."""

    correct: bool
    label: str | None  # the right label when ``correct`` is False: one of the model's, "other", or unknown (None)
    note: str | None
    at: datetime


@dataclass(frozen=True)
class StoredDiagnosis:
    id: str
    created_at: datetime
    model_name: str
    model_version: str
    label: str
    answer: dict[str, Any]
    photo: str | None
    feedback: Feedback | None

    @property
    def true_label(self) -> str | None:
        """The label a person confirmed or gave; None when there is none to train on."""
        if self.feedback is None:
            return None
        if self.feedback.correct:
            return self.label
        return self.feedback.label


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every one this package writes is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def create_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    return sa.create_engine(parsed, pool_pre_ping=True)


class Database:
    def __init__(self, url: str):
        self.engine = create_engine(url)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic); a current schema is left as it is."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def insert_many(self, kept: list[StoredDiagnosis]) -> None:
        """Insert new diagnoses (without feedback) in one transaction."""
        rows = [
            {
                "id": diagnosis.id,
                "created_at": diagnosis.created_at,
                "model_name": diagnosis.model_name,
                "model_version": diagnosis.model_version,
                "label": diagnosis.label,
                "answer": diagnosis.answer,
                "photo": diagnosis.photo,
            }
            for diagnosis in kept
        ]
        with self.engine.begin() as connection:
            connection.execute(diagnoses.insert(), rows)

    def set_feedback(self, diagnosis_id: str, feedback: Feedback, since: datetime) -> bool:
        """Record (or replace) the feedback on a diagnosis kept since ``since``; False if there is none."""
        values = {"correct": feedback.correct, "corrected_label": feedback.label, "note": feedback.note}
        with self.engine.begin() as connection:  # committed when this returns: then the caller may say so
            result = connection.execute(
                diagnoses.update()
                .where(diagnoses.c.id == diagnosis_id, diagnoses.c.created_at >= since)
                .values(**values, feedback_at=feedback.at)
            )
        return result.rowcount == 1

    def get(self, diagnosis_id: str, since: datetime | None = None) -> StoredDiagnosis | None:
        """The diagnosis with this id (kept since ``since``, if given), or None."""
        query = sa.select(diagnoses).where(diagnoses.c.id == diagnosis_id)
        if since is not None:
            query = query.where(diagnoses.c.created_at >= since)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else stored(row)

    def delete(self, diagnosis_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(diagnoses.delete().where(diagnoses.c.id == diagnosis_id))

    def older_than(self, cutoff: datetime, limit: int) -> list[tuple[str, str | None]]:
        """(id, photo key) of up to ``limit`` diagnoses kept before ``cutoff``, oldest first."""
        query = (
            sa.select(diagnoses.c.id, diagnoses.c.photo)
            .where(diagnoses.c.created_at < cutoff)
            .order_by(diagnoses.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [(row.id, row.photo) for row in connection.execute(query)]

    def with_feedback(self, since: datetime | None = None) -> Iterator[StoredDiagnosis]:
        """Every diagnosis a grower confirmed or corrected (kept since ``since``), oldest first."""
        query = sa.select(diagnoses).where(diagnoses.c.correct.is_not(None)).order_by(diagnoses.c.created_at)
        if since is not None:
            query = query.where(diagnoses.c.created_at >= since)
        with self.engine.connect() as connection:
            for row in connection.execute(query).mappings():
                yield stored(row)

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(diagnoses)).scalar_one()


def stored(row: Any) -> StoredDiagnosis:
    feedback = None
    if row["correct"] is not None:
        feedback = Feedback(bool(row["correct"]), row["corrected_label"], row["note"], utc(row["feedback_at"]))
    return StoredDiagnosis(
        id=row["id"],
        created_at=utc(row["created_at"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        label=row["label"],
        answer=row["answer"],
        photo=row["photo"],
        feedback=feedback,
    )
