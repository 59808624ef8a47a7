"""Engines and sessions: how every store function gets its connection.

SQLite runs in WAL mode with a busy timeout, and write transactions start
with ``BEGIN IMMEDIATE`` so two writers queue instead of failing half-way.
Query functions elsewhere in the package take a session from
:func:`transaction` or :func:`reading`; they never open one and never commit.

Inserts use ``ON CONFLICT DO NOTHING`` (:func:`insert_new`), so two
processes storing the same rows at once both succeed and store each once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        readonly = connection.get_execution_options().get("paperboy_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A write transaction: committed when the block ends, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A read-only session (on SQLite a deferred transaction that blocks no writer)."""
    with Session(engine.execution_options(paperboy_readonly=True)) as session:
        yield session


def insert_for(session: Session, table: Any) -> Any:
    """The dialect's INSERT for ``table`` (the one with ``ON CONFLICT``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"paperboy supports SQLite and PostgreSQL, not {dialect}")


IN_LIST = 500  # values per IN (...) list: far under SQLite's 32,766 bound parameters


def chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    """``values`` in lists short enough for one ``IN (...)``."""
    return [values[i : i + IN_LIST] for i in range(0, len(values), IN_LIST)]


INSERT_ROWS = 1000  # rows per INSERT: SQLite allows 32,766 bound values, PostgreSQL 65,535


def insert_new(session: Session, table: Any, rows: Sequence[dict[str, Any]], unique: list[str]) -> int:
    """INSERT .. ON CONFLICT (unique) DO NOTHING for many rows; how many went in.

    One statement compiled once and run with many parameter sets: SQLAlchemy's
    "insertmanyvalues" batches them into multi-row INSERTs of up to
    INSERT_ROWS rows. (Building a ``.values(rows)`` statement instead compiles
    a new statement of thousands of bound values for each batch, which made
    storing matches the slowest step of a big match.) Counted with RETURNING:
    the driver's rowcount is -1 for multi-row inserts on psycopg.
    """
    return len(insert_new_ids(session, table, rows, unique))


def insert_new_ids(
    session: Session, table: Any, rows: Sequence[dict[str, Any]], unique: list[str]
) -> list[int]:
    """:func:`insert_new`, returning the ids of the rows that went in."""
    if not rows:
        return []
    stmt = (
        insert_for(session, table.__table__)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(table.__table__.c.id)
    )
    connection = session.connection().execution_options(insertmanyvalues_page_size=INSERT_ROWS)
    return [row_id for (row_id,) in connection.execute(stmt, list(rows))]


def converter(
    session: Session | Connection, column: Any, key: Callable[[Any], Hashable] | None = None
) -> Callable[[Any], Any]:
    """What turns a value of ``column`` into what the database driver takes (a datetime as
    SQLAlchemy writes it on SQLite, a list as JSON...): the column's own type, run once per
    distinct value (told apart by ``key(value)``, the value itself by default) and
    remembered. For :func:`bulk_insert`'s rows, where thousands share a few values."""
    dialect = core(session).dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return lambda value: value
    seen: dict[Hashable, Any] = {}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        known = value if key is None else key(value)
        if known not in seen:
            seen[known] = process(value)
        return seen[known]

    return convert


def driver_mark(session: Session | Connection) -> str:
    """The driver's mark for a positional parameter in SQL it is given as text: ``?`` for
    sqlite3, ``%s`` for psycopg."""
    return "?" if core(session).dialect.paramstyle == "qmark" else "%s"


def values_table(session: Session | Connection, values: Sequence[Any]) -> tuple[str, Any]:
    """``values`` as a table of one column, ``value``, for a statement over thousands of them in
    one bound parameter (no bound value, no Python tuple per value): the SQL of the table, and
    its parameter. SQLite's ``json_each`` over a JSON array, PostgreSQL's ``unnest`` over an
    array of integers (the only kind asked for so far)."""
    if core(session).dialect.name == "postgresql":
        return "SELECT unnest(%s::bigint[]) AS value", list(values)
    return "SELECT value FROM json_each(?)", json.dumps(list(values))


def bulk_insert(
    session: Session | Connection,
    table: Any,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    skip_conflicts_on: Sequence[str] | None = None,
) -> int:
    """INSERT many rows (tuples in the order of ``columns``) with the driver's own
    executemany; how many went in (the driver's count, summed over the rows).

    For the hot paths of ingest and matching: no SQLAlchemy type processing per row (a
    third of a big file's storing, half of queueing a big match), so every value must
    already be what the driver takes: strings, numbers, and what a :func:`converter`
    made of the rest. With ``skip_conflicts_on``, ``ON CONFLICT (..) DO NOTHING``, in the
    SQL both SQLite and PostgreSQL speak.
    """
    if not rows:
        return 0
    connection = core(session)
    quote = connection.dialect.identifier_preparer.quote
    mark = driver_mark(connection)
    sql = (
        f"INSERT INTO {quote(table.__tablename__)} ({', '.join(map(quote, columns))}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    if skip_conflicts_on:
        sql += f" ON CONFLICT ({', '.join(map(quote, skip_conflicts_on))}) DO NOTHING"
    return int(connection.exec_driver_sql(sql, list(rows)).rowcount)


def core(session: Session | Connection) -> Connection:
    """The session's connection, for the outbox's hot statements: run as Core, they skip
    the ORM's result loading and its identity-map synchronisation after UPDATEs (which
    fetched every updated row again and cost a delivery run a tenth of its time)."""
    return session if isinstance(session, Connection) else session.connection()


def inserted(session: Session, stmt: Any, id_column: Any) -> int:
    """Run a single INSERT .. ON CONFLICT DO NOTHING; how many rows went in (RETURNING)."""
    return len(session.execute(stmt.returning(id_column)).all())
