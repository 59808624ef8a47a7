"""Fixtures: real SQLite files, a real PostgreSQL database, a real SMTP server.

Plain helpers (paths, the clock, the sink, configurations) are in ``helpers.py``."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, text

from service import store

if TYPE_CHECKING:
    from service.cycle import App
from tests.helpers import (
    POSTGRES_URL,
    Sink,
    admin_connection,
    database_at,
    free_port,
    postgres_available,
    scratch_schema,
    serving,
    serving_app,
    settings_for,
)

# ---------------------------------------------------------------- databases
#
# Migrating a database from empty costs a test about a second (Alembic, six
# revisions). So the schema is built once per session, in a template, and each
# test gets a copy: a copied SQLite file, or on PostgreSQL a database created
# from a template database (as procrastinate's tests do). Tests of the
# migrations themselves take ``empty_database_url``.


@pytest.fixture(scope="session", autouse=True)
def private_settings_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Big configurations are kept validated (service.settings.cache): in the run's own
    folder, not the user's (every command the tests start inherits it)."""
    os.environ["PAPERBOY_CACHE"] = str(tmp_path_factory.mktemp("settings-cache"))


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    reason = postgres_available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    return reason


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest schema revision."""
    path = tmp_path_factory.mktemp("template") / "paperboy.db"
    engine = store.make_engine(f"sqlite:///{path}")
    store.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_reason: str | None) -> Iterator[str]:
    """The name of a PostgreSQL database at the newest schema revision (dropped at the end)."""
    if postgres_reason:
        pytest.skip(postgres_reason)
    name = f"paperboy_template_{uuid.uuid4().hex[:8]}"
    with admin_connection() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = store.make_engine(database_at(name))
    store.upgrade(engine)
    engine.dispose()
    yield name
    with admin_connection() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A new PostgreSQL database at the newest schema revision, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin_connection() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    try:
        yield database_at(name)
    finally:
        with admin_connection() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store at the newest schema revision, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "paperboy.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store (no schema yet), on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'paperboy.db'}"
        return
    reason = request.getfixturevalue("postgres_reason")
    if reason:
        pytest.skip(reason)
    with scratch_schema(POSTGRES_URL, prefix="t_") as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = store.make_engine(database_url)
    yield eng
    eng.dispose()


# ---------------------------------------------------------------- SMTP


@pytest.fixture
def smtp_server() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    with serving(sink) as port:
        yield sink, port


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[App, str]]:
    """A web server on a free port over a store that has ingested digest-a (no email yet):
    the App and the base URL. SQLite and PostgreSQL."""
    port = free_port()
    with serving_app(tmp_path, settings_for(tmp_path, database_url, port), port) as served:
        yield served
