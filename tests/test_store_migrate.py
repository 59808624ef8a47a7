"""Schema migrations (Alembic) on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel, select

from service import store
from tests.helpers import FIXED_NOW, run_cli, write_config


def test_migrations_build_exactly_the_tables_the_code_declares(empty_database_url: str) -> None:
    engine = store.make_engine(empty_database_url)
    assert store.upgrade(engine) == (None, store.head_revision())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    assert store.upgrade(engine) == (store.head_revision(), store.head_revision())  # a no-op
    engine.dispose()


def test_a_database_from_the_first_release_is_stamped_then_upgraded(empty_database_url: str) -> None:
    """The first release made its tables with create_all and kept no alembic_version."""
    engine = store.make_engine(empty_database_url)
    store.upgrade(engine, store.FIRST_RELEASE)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO subscribers (email, token, active, created_at)"
                " VALUES ('a@x.org', 't', true, :at)"
            ),
            {"at": FIXED_NOW.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO papers (key, title, abstract, first_seen_at, source, line)"
                " VALUES ('k', 'K', 'abs', :at, 'f.txt', 1)"
            ),
            {"at": FIXED_NOW.replace(tzinfo=None)},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, paper_id, state, score, terms, created_at, attempts)"
                """ VALUES (1, 1, 'pending', 2, '["k"]', :at, 0)"""
            ),
            {"at": FIXED_NOW.replace(tzinfo=None)},
        )
    assert store.schema_revision(engine) is None

    before, after = store.upgrade(engine)

    assert (before, after) == (None, store.head_revision())
    with store.reading(engine) as session:
        (delivery,) = session.exec(select(store.Delivery)).all()
        assert delivery.via == ["keywords"]  # what brought deliveries before topics existed
        assert delivery.terms == ["k"]
    engine.dispose()


def test_db_upgrade_command(tmp_path: Path) -> None:
    config = write_config(tmp_path / "paperboy.yaml", "database: sqlite:///db/paperboy.db\n")

    first = run_cli("--config", config, "db", "upgrade")
    again = run_cli("--config", config, "db", "upgrade")

    assert first.returncode == 0, first.stderr
    assert f"upgraded the database from (empty) to {store.head_revision()}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert f"the database is up to date at {store.head_revision()}" in again.stdout
    assert (tmp_path / "db" / "paperboy.db").is_file()


def test_the_newest_revision_is_alembics_head() -> None:
    """``head_revision`` reads the migration files' names (Alembic is not imported for it);
    Alembic's own answer must be the same."""
    from alembic.script import ScriptDirectory

    from service.store.migrate import MIGRATIONS

    assert store.head_revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head()
