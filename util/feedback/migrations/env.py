"""Alembic's entry point: run the migrations on the connection util.feedback.store hands over.

Several replicas may start at once against one PostgreSQL: an advisory lock makes them migrate one
after the other (the second finds the schema current and does nothing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

MIGRATION_LOCK = 240_024  # any constant; this project's advisory-lock number


def run_migrations(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:  # the alembic command line: -x url=... or PLANTNET_DATABASE_URL
    from util.config import Settings

    url = context.get_x_argument(as_dictionary=True).get("url") or Settings.from_env().database_url
    with sa.create_engine(url).connect() as fresh:
        run_migrations(fresh)
        fresh.commit()
else:
    run_migrations(connection)
