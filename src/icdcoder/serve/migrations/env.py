"""Alembic environment: migrations run on the connection :func:`icdcoder.serve.db.upgrade` passes in, or on the
URL of an ``alembic.ini`` (``sqlalchemy.url``) when run by the ``alembic`` command itself."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from icdcoder.serve.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        _run(connection)


run_migrations_online()
