"""Alembic's entry point: migrate the connection :func:`service.store.upgrade` hands in.

paperboy never runs Alembic from an ``alembic.ini``; ``paperboy db upgrade``
(and every start) calls :func:`service.store.upgrade`, which opens the
transaction, takes the migration lock and passes its connection here.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from service.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
context.run_migrations()
