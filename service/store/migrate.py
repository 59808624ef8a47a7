"""The schema's migrations (Alembic), run by every command that opens the store.

Migrations live in ``migrations/versions``, one file per revision, named
``<revision>_<what>.py`` with revisions that sort in order (``0001``,
``0002``...). Every command that opens the store calls :func:`upgrade`
first. When the schema is already at the newest revision (nearly always)
that is one query, and Alembic, which costs a command a third of a second
of CPU to import, is not imported at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from ..errors import NewerDatabase
from ..glance import VERSIONS, head_revision, known_revisions

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = VERSIONS.parent
FIRST_RELEASE = "0001"  # the schema the first release made with create_all
MIGRATION_LOCK = 0x7061_7065_7262_6F79 & 0x7FFF_FFFF_FFFF_FFFF  # "paperboy", a PostgreSQL advisory lock key


def _alembic(connection: Connection) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(found) if found is not None else None


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for an empty (or pre-migration) database."""
    with engine.connect() as conn:
        return _revision(conn)


def check_known(revision: str | None) -> None:
    """:class:`NewerDatabase` unless ``revision`` is one of this paperboy's (or None: empty)."""
    if revision is not None and revision not in known_revisions():
        raise NewerDatabase(
            f"the database was migrated by a newer paperboy (revision {revision}; this one knows up to "
            f"{head_revision()}); upgrade paperboy"
        )


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the schema to ``revision`` (Alembic); returns the revisions before and after.

    Safe to call from several processes at once: on SQLite the transaction
    starts with BEGIN IMMEDIATE, on PostgreSQL it takes an advisory lock, so
    one process migrates and the others then find the work done. A database
    the first release created (tables, no ``alembic_version``) is stamped at
    that release's revision first.
    """
    target = head_revision() if revision == "head" else revision
    current = schema_revision(engine)
    if current == target:
        return current, current
    check_known(current)
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        before = _revision(conn)
        check_known(before)
        config = _alembic(conn)
        if before is None and inspect(conn).has_table("papers"):
            command.stamp(config, FIRST_RELEASE)
        command.upgrade(config, revision)
        after = _revision(conn)
    return before, after
