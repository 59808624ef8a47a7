"""The store: SQLModel tables and every query paperboy makes.

The database, not the code, refuses duplicates: one paper per key, one
ingested file per content hash, one subscriber per address, one delivery per
(subscriber, paper). Inserts use ``ON CONFLICT DO NOTHING`` so two processes
ingesting the same file at once both succeed and store each paper once.

Query functions are keyword-only and take a session; they never open one and
never commit. Timestamps are timezone-aware UTC, passed in by the caller.

SQLite runs in WAL mode with a busy timeout, and write transactions start
with ``BEGIN IMMEDIATE`` so two writers queue instead of failing half-way.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    Index,
    String,
    UniqueConstraint,
    and_,
    case,
    delete,
    event,
    func,
    inspect,
    literal_column,
    or_,
    text,
    type_coerce,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator
from sqlmodel import Column, Field, Session, SQLModel, col, create_engine, select

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class Paper(SQLModel, table=True):
    __tablename__ = "papers"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)
    title: str
    abstract: str
    digest_date: date | None = None
    first_seen_at: datetime = _ts()
    source: str  # the file it was first seen in
    line: int  # the line of its title there
    matched_at: datetime | None = _ts(nullable=True)  # None: not yet matched


class IngestedFile(SQLModel, table=True):
    __tablename__ = "ingested_files"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(unique=True, index=True)
    path: str
    size: int
    ingested_at: datetime = _ts()
    entries: int = 0
    new_papers: int = 0
    problems: int = 0
    error: str | None = None  # the file held nothing to ingest (empty, binary)


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)  # lower-cased
    name: str | None = None
    token: str = Field(unique=True, index=True)  # private feed URLs, unsubscribe
    active: bool = True  # False once the subscriber left the configuration
    created_at: datetime = _ts()
    # Set by one-click unsubscribe; wins over the configuration until ``paperboy resubscribe``.
    unsubscribed_at: datetime | None = _ts(nullable=True)


class DeliveryState:
    """pending -> sending -> sent; a failed send goes back to pending, or to failed.

    ``sending`` is a claim with a lease: the process that claimed the row
    (``claimed_by``) sends it before ``lease_until``; a row still sending after
    that (the process died) is due again.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the subscriber unsubscribed before it went out
    ALL = (PENDING, SENDING, SENT, FAILED, CANCELLED)


# The rows still on their way out. A partial index holds only these (migration 0006): it
# stays as small as the backlog however long the history grows, and a row leaves it
# once, when it is sent, instead of moving inside an index of every row at each step.
# A query uses the index only when its WHERE carries this very condition, literals
# included (SQLite proves a partial index usable by matching terms, not by
# evaluating bound parameters): :func:`_live` writes it.
LIVE_STATES = (DeliveryState.PENDING, DeliveryState.SENDING)
LIVE_STATES_SQL = "state IN ({})".format(", ".join(f"'{state}'" for state in LIVE_STATES))


class Delivery(SQLModel, table=True):
    """The outbox: one row per (subscriber, paper) that matched."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "paper_id"),
        # a subscriber's pending and sending rows: claims, sent marks, preview, unsubscribe
        Index(
            "ix_deliveries_live",
            "subscriber_id",
            sqlite_where=text(LIVE_STATES_SQL),
            postgresql_where=text(LIVE_STATES_SQL),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscribers.id")
    paper_id: int = Field(foreign_key="papers.id", index=True)
    state: str = Field(default=DeliveryState.PENDING)
    score: int = 0
    terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # What brought the paper: "keywords", "query", "topic:<name>" (migration 0002).
    via: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=text("'[]'"))
    )
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)
    attempts: int = 0
    last_error: str | None = None
    message_id: str | None = None
    # migration 0003: retries and claims
    next_attempt_at: datetime | None = _ts(nullable=True)  # pending: not before this
    lease_until: datetime | None = _ts(nullable=True)  # sending: claimed until this
    claimed_by: str | None = None  # sending: which process


class TopicPaper(SQLModel, table=True):
    """A paper that matched a topic: the topic's public feed (migration 0002)."""

    __tablename__ = "topic_papers"
    __table_args__ = (UniqueConstraint("topic", "paper_id"),)
    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(index=True)
    paper_id: int = Field(foreign_key="papers.id", index=True)
    score: int = 0
    terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


# ---------------------------------------------------------------- engine


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


MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_RELEASE = "0001"  # the schema the first release made with create_all
MIGRATION_LOCK = 0x7061_7065_7262_6F79 & 0x7FFF_FFFF_FFFF_FFFF  # "paperboy", a PostgreSQL advisory lock key


def _alembic(connection: Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for an empty (or pre-migration) database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the schema to ``revision`` (Alembic); returns the revisions before and after.

    Safe to call from several processes at once: on SQLite the transaction
    starts with BEGIN IMMEDIATE, on PostgreSQL it takes an advisory lock, so
    one process migrates and the others then find the work done. A database
    the first release created (tables, no ``alembic_version``) is stamped at
    that release's revision first.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        before = MigrationContext.configure(conn).get_current_revision()
        config = _alembic(conn)
        if before is None and inspect(conn).has_table("papers"):
            command.stamp(config, FIRST_RELEASE)
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


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


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"paperboy supports SQLite and PostgreSQL, not {dialect}")


INSERT_ROWS = 1000  # rows per INSERT: SQLite allows 32,766 bound values, PostgreSQL 65,535


def _insert_new(session: Session, table: Any, rows: Sequence[dict[str, Any]], unique: list[str]) -> int:
    """INSERT .. ON CONFLICT (unique) DO NOTHING for many rows; how many went in.

    One statement compiled once and run with many parameter sets: SQLAlchemy's
    "insertmanyvalues" batches them into multi-row INSERTs of up to
    INSERT_ROWS rows. (Building a ``.values(rows)`` statement instead compiles
    a new statement of thousands of bound values for each batch, which made
    storing matches the slowest step of a big match.) Counted with RETURNING:
    the driver's rowcount is -1 for multi-row inserts on psycopg.
    """
    if not rows:
        return 0
    stmt = (
        _insert(session, table.__table__)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(table.__table__.c.id)
    )
    connection = session.connection().execution_options(insertmanyvalues_page_size=INSERT_ROWS)
    return len(connection.execute(stmt, list(rows)).all())


def _core(session: Session | Connection) -> Connection:
    """The session's connection, for the outbox's hot statements: run as Core, they skip
    the ORM's result loading and its identity-map synchronisation after UPDATEs (which
    fetched every updated row again and cost a delivery run a tenth of its time)."""
    return session if isinstance(session, Connection) else session.connection()


def _inserted(session: Session, stmt: Any, id_column: Any) -> int:
    """Run a single INSERT .. ON CONFLICT DO NOTHING; how many rows went in (RETURNING)."""
    return len(session.execute(stmt.returning(id_column)).all())


# ---------------------------------------------------------------- files


def file_known(*, session: Session, sha256: str) -> bool:
    return session.exec(select(IngestedFile.id).where(IngestedFile.sha256 == sha256)).first() is not None


def record_file(*, session: Session, record: IngestedFile) -> bool:
    """Record an ingested file; False when another process recorded it first."""
    values = record.model_dump(exclude={"id"})
    stmt = _insert(session, IngestedFile).values(**values).on_conflict_do_nothing()
    return _inserted(session, stmt, IngestedFile.id) == 1


# ---------------------------------------------------------------- papers


@dataclass(frozen=True, slots=True)
class NewPaper:
    key: str
    title: str
    abstract: str
    digest_date: date | None
    source: str
    line: int


def add_papers(*, session: Session, papers: Sequence[NewPaper], at: datetime) -> int:
    """Store the papers whose key is new; returns how many were new."""
    if not papers:
        return 0
    unique: dict[str, NewPaper] = {}
    for paper in papers:
        unique.setdefault(paper.key, paper)
    rows = [
        {
            "key": p.key,
            "title": p.title,
            "abstract": p.abstract,
            "digest_date": p.digest_date,
            "source": p.source,
            "line": p.line,
            "first_seen_at": at,
            "matched_at": None,
        }
        for p in unique.values()
    ]
    return _insert_new(session, Paper, rows, ["key"])


def unmatched_papers(*, session: Session, limit: int) -> list[Paper]:
    stmt = select(Paper).where(col(Paper.matched_at).is_(None)).order_by(col(Paper.id)).limit(limit)
    return list(session.exec(stmt))


def mark_matched(*, session: Session, paper_ids: Iterable[int], at: datetime) -> None:
    ids = list(paper_ids)
    if ids:
        session.execute(update(Paper).where(col(Paper.id).in_(ids)).values(matched_at=at))


def find_paper(*, session: Session, key: str) -> Paper | None:
    return session.exec(select(Paper).where(Paper.key == key)).first()


def latest_papers(*, session: Session, limit: int) -> list[Paper]:
    """Newest first: the latest digest first, each digest in page order."""
    stmt = select(Paper).order_by(col(Paper.first_seen_at).desc(), col(Paper.id)).limit(limit)
    return list(session.exec(stmt))


# ---------------------------------------------------------------- subscribers


def sync_subscribers(
    *, session: Session, people: Sequence[tuple[str, str | None]], at: datetime
) -> dict[str, Subscriber]:
    """Make the table follow the configuration: add, rename, (de)activate.

    Returns the active subscribers by lower-cased address. Tokens are made
    once, from ``secrets``, and never change while the subscriber exists.
    """
    wanted = {email.lower(): name for email, name in people}
    existing = {s.email: s for s in session.exec(select(Subscriber))}
    for email, name in wanted.items():
        if email not in existing:
            stmt = (
                _insert(session, Subscriber)
                .values(email=email, name=name, token=secrets.token_urlsafe(18), active=True, created_at=at)
                .on_conflict_do_nothing(index_elements=["email"])
            )
            session.execute(stmt)
    for email, sub in existing.items():
        active = email in wanted
        name = wanted.get(email, sub.name)
        if sub.active != active or sub.name != name:
            sub.active, sub.name = active, name
            session.add(sub)
    session.flush()
    return active_subscribers(session=session)


def active_subscribers(*, session: Session) -> dict[str, Subscriber]:
    """The subscribers in the configuration, by lower-cased address."""
    stmt = select(Subscriber).where(Subscriber.active == True)  # noqa: E712
    return {s.email: s for s in session.exec(stmt)}


def subscriber_by_token(*, session: Session, token: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.token == token)).first()


def unsubscribe(*, session: Session, token: str, at: datetime) -> Subscriber | None:
    """One-click unsubscribe: record the opt-out (once) and cancel what is still pending.

    Returns the subscriber, or None for a token that belongs to no one.
    """
    sub = subscriber_by_token(session=session, token=token)
    if sub is None:
        return None
    if sub.unsubscribed_at is None:
        sub.unsubscribed_at = at
        session.add(sub)
        session.execute(
            update(Delivery)
            .where(
                col(Delivery.subscriber_id) == sub.id,
                _live(),
                col(Delivery.state) == DeliveryState.PENDING,
            )
            .values(state=DeliveryState.CANCELLED, last_error="unsubscribed", next_attempt_at=None)
        )
        session.flush()
    return sub


def resubscribe(*, session: Session, email: str) -> bool:
    """The operator's undo of an opt-out: the subscriber receives new papers again.
    False when there was no opt-out to undo."""
    sub = subscriber_by_email(session=session, email=email)
    if sub is None or sub.unsubscribed_at is None:
        return False
    sub.unsubscribed_at = None
    session.add(sub)
    session.flush()
    return True


def opted_out(*, session: Session) -> list[Subscriber]:
    stmt = (
        select(Subscriber).where(col(Subscriber.unsubscribed_at).is_not(None)).order_by(col(Subscriber.email))
    )
    return list(session.exec(stmt))


def subscribers_by_id(*, session: Session, ids: Sequence[int]) -> dict[int, Subscriber]:
    return {s.id: s for s in session.exec(select(Subscriber).where(col(Subscriber.id).in_(ids))) if s.id}


def subscriber_by_email(*, session: Session, email: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email == email.lower())).first()


# ---------------------------------------------------------------- deliveries


@dataclass(frozen=True, slots=True)
class NewDelivery:
    subscriber_id: int
    paper_id: int
    score: int
    terms: list[str]
    via: list[str]


def add_deliveries(*, session: Session, deliveries: Sequence[NewDelivery], at: datetime) -> int:
    """Queue ``deliveries`` as pending (a pair already queued is left as it is).

    They are written in (subscriber, paper) order, so each subscriber's rows
    from one matching pass sit together on a few pages: a claim or a sent
    mark then rewrites those pages, not one page per row. (Matching goes
    paper by paper; in that order a digest's rows were spread over half the
    table, and delivery spent most of its database time writing pages.)
    """
    if not deliveries:
        return 0
    rows = [
        {
            "subscriber_id": d.subscriber_id,
            "paper_id": d.paper_id,
            "score": d.score,
            "terms": d.terms,
            "via": d.via,
            "state": DeliveryState.PENDING,
            "created_at": at,
            "attempts": 0,
        }
        for d in sorted(deliveries, key=attrgetter("subscriber_id", "paper_id"))
    ]
    return _insert_new(session, Delivery, rows, ["subscriber_id", "paper_id"])


class OutboxRow(NamedTuple):
    """A delivery on its way into an email.

    A chunk loads thousands of these and shows a few: a named tuple (made in C
    from the driver's row), with the JSON columns as the driver returns them
    until read.
    """

    subscriber_id: int
    id: int
    paper_id: int
    attempts: int
    score: int
    terms_raw: Any
    via_raw: Any

    @property
    def terms(self) -> list[str]:
        return list(_strings(self.terms_raw) if isinstance(self.terms_raw, str) else self.terms_raw)

    @property
    def via(self) -> list[str]:
        return list(_strings(self.via_raw) if isinstance(self.via_raw, str) else self.via_raw)


@functools.lru_cache(maxsize=4096)  # a few term lists recur across thousands of rows
def _strings(raw: str) -> tuple[str, ...]:
    """A JSON list of strings, as the database returned it, decoded."""
    return tuple(json.loads(raw))


_OUTBOX_COLUMNS = (  # in OutboxRow's order
    col(Delivery.subscriber_id),
    col(Delivery.id),
    col(Delivery.paper_id),
    col(Delivery.attempts),
    col(Delivery.score),
    type_coerce(col(Delivery.terms), String),  # decoded when shown
    type_coerce(col(Delivery.via), String),
)


def _by_subscriber(result: Any) -> dict[int, list[OutboxRow]]:
    """The rows of ``result`` (_OUTBOX_COLUMNS) grouped by subscriber, each group by id.

    (Sorted as plain tuples: comparing SQLAlchemy rows goes through Python
    for every comparison, and cost a claim more than its UPDATE.)
    """
    out: dict[int, list[OutboxRow]] = {}
    for row in sorted(map(OutboxRow._make, result.all())):  # by subscriber, then id
        group = out.get(row.subscriber_id)
        if group is None:
            out[row.subscriber_id] = [row]
        else:
            group.append(row)
    return out


def _live() -> Any:
    """``deliveries.state IN ('pending', 'sending')``, with the states as literals: the
    condition of the partial index ``ix_deliveries_live`` (see ``LIVE_STATES_SQL``)."""
    return col(Delivery.state).in_([literal_column(f"'{state}'") for state in LIVE_STATES])


def _due(at: datetime) -> Any:
    """Rows to send now: pending and past their retry time, or sending with an expired lease.

    Written without a top-level OR so that the planner looks a subscriber's
    rows up in the (subscriber_id, state) index instead of scanning a state.
    """
    return and_(
        _live(),
        case(
            (
                col(Delivery.state) == DeliveryState.PENDING,
                or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= at),
            ),
            else_=col(Delivery.lease_until) < at,
        ),
    )


def claim_due(
    *,
    session: Session,
    at: datetime,
    lease_until: datetime,
    worker: str,
    max_subscribers: int,
    after: int = 0,
) -> tuple[dict[int, list[OutboxRow]], bool]:
    """Claim the due deliveries of up to ``max_subscribers`` active subscribers whose id
    is above ``after`` (a run walks the subscribers once, in id order).

    Returns the claimed rows by subscriber (each subscriber's by id), and whether anything was
    due at all (rows another process holds locked are skipped, not waited
    for: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's BEGIN IMMEDIATE
    lets one writer at a time in). The rows become ``sending``, leased to
    ``worker`` until ``lease_until``.
    """
    fold_sent(session=session)  # an email a dead process sent must not look due again
    due_rows = (
        select(Delivery.id)
        .where(col(Delivery.subscriber_id) == Subscriber.id, _due(at))
        .correlate(Subscriber)
        .exists()
    )
    # Walk the subscribers in id order and look each one's rows up in the
    # (subscriber_id, state) index: a chunk costs the same however long the outbox is.
    subscribers = list(
        session.exec(
            select(Subscriber.id)
            .where(
                Subscriber.active == True,  # noqa: E712
                col(Subscriber.unsubscribed_at).is_(None),
                col(Subscriber.id) > after,
                due_rows,
            )
            .order_by(col(Subscriber.id))
            .limit(max_subscribers)
        )
    )
    if not subscribers:
        return {}, False
    rows = (
        select(Delivery.id)
        .where(_due(at), col(Delivery.subscriber_id).in_(subscribers))
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
    )
    claim = (
        update(Delivery)
        .where(col(Delivery.id).in_(rows.scalar_subquery()))
        .values(state=DeliveryState.SENDING, lease_until=lease_until, claimed_by=worker)
        .returning(*_OUTBOX_COLUMNS)  # what the emails need: no second read
    )
    return _by_subscriber(_core(session).execute(claim)), True


def outbox_rows(*, session: Session, subscriber_ids: Sequence[int]) -> dict[int, list[OutboxRow]]:
    """The pending rows of ``subscriber_ids``, by subscriber, in one query (``preview``)."""
    stmt = sa_select(*_OUTBOX_COLUMNS).where(
        col(Delivery.subscriber_id).in_(subscriber_ids),
        _live(),
        col(Delivery.state) == DeliveryState.PENDING,
    )
    return _by_subscriber(_core(session).execute(stmt))


def best_first(rows: Iterable[OutboxRow], limit: int, seen: Mapping[int, Any]) -> list[OutboxRow]:
    """The ``limit`` rows an email shows: best matches first, then the newest papers
    (``seen``: each paper's ``first_seen_at``, see :func:`paper_seen`)."""
    ordered = sorted(rows, key=lambda r: r.paper_id)
    ordered.sort(key=lambda r: seen[r.paper_id], reverse=True)  # stable: ties keep the paper order
    ordered.sort(key=lambda r: r.score, reverse=True)
    return ordered[:limit]


def paper_seen(*, session: Session, paper_ids: Iterable[int]) -> dict[int, Any]:
    """When each paper was first seen, by id, as the database holds it: only ever compared."""
    stmt = sa_select(col(Paper.id), type_coerce(col(Paper.first_seen_at), String)).where(
        col(Paper.id).in_(list(paper_ids))
    )
    rows: Any = _core(session).execute(stmt).all()
    return dict(rows)


def paper_texts(*, session: Session, paper_ids: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    """(title, abstract, key) of each paper, by id."""
    stmt = sa_select(col(Paper.id), col(Paper.title), col(Paper.abstract), col(Paper.key)).where(
        col(Paper.id).in_(list(paper_ids))
    )
    rows: Any = _core(session).execute(stmt).all()
    return {i: (title, abstract, key) for i, title, abstract, key in rows}


def _mine(delivery_ids: Sequence[int], worker: str) -> Any:
    return update(Delivery).where(
        col(Delivery.id).in_(delivery_ids),
        col(Delivery.state) == DeliveryState.SENDING,
        col(Delivery.claimed_by) == worker,
    )


class SentMark(SQLModel, table=True):
    """The server accepted the email carrying what ``worker`` claimed for ``subscriber_id``.

    Written in its own short transaction the moment the server says 250: a
    one-row insert, where marking the outbox rows themselves would rewrite a
    page per paper. :func:`fold_sent` then moves the rows to ``sent`` for many
    emails at once, and every claim folds first, so a mark left by a process
    that died still counts.
    """

    __tablename__ = "sent_marks"
    id: int | None = Field(default=None, primary_key=True)
    worker: str
    subscriber_id: int
    message_id: str
    sent_at: datetime = _ts()
    deliveries: int  # rows the email carried


@dataclass(frozen=True, slots=True)
class NewSentMark:
    subscriber_id: int
    message_id: str
    sent_at: datetime
    deliveries: int


def record_sent(*, session: Session | Connection, worker: str, marks: Sequence[NewSentMark]) -> None:
    """Insert ``worker``'s sent marks, one row per accepted email, in one statement."""
    if marks:
        _core(session).execute(
            sa_insert(SentMark),
            [
                {
                    "worker": worker,
                    "subscriber_id": m.subscriber_id,
                    "message_id": m.message_id,
                    "sent_at": m.sent_at,
                    "deliveries": m.deliveries,
                }
                for m in marks
            ],
        )


@dataclass(frozen=True, slots=True)
class Folded:
    emails: int
    rows: int
    lost: list[tuple[int, int]]  # (subscriber id, rows) no longer ours: the lease ran out first


def fold_sent(*, session: Session, worker: str | None = None) -> Folded:
    """Apply the sent marks (``worker``'s, or everyone's): ``sending -> sent`` for the rows
    each stands for, in one transaction; the marks are then deleted."""
    stmt = (
        sa_select(
            col(SentMark.id), col(SentMark.subscriber_id), col(SentMark.message_id), col(SentMark.deliveries)
        )
        .order_by(col(SentMark.id))
        .with_for_update(skip_locked=True)  # one folder each
    )
    if worker is not None:
        stmt = stmt.where(col(SentMark.worker) == worker)
    marks = list(_core(session).execute(stmt))
    if not marks:
        return Folded(0, 0, [])
    ids = [m.id for m in marks]
    result = _core(session).execute(  # one UPDATE ... FROM for all of them
        update(Delivery)
        .where(
            col(Delivery.subscriber_id) == col(SentMark.subscriber_id),
            col(Delivery.claimed_by) == col(SentMark.worker),
            _live(),
            col(Delivery.state) == DeliveryState.SENDING,
            col(SentMark.id).in_(ids),
        )
        .values(
            state=DeliveryState.SENT,
            sent_at=col(SentMark.sent_at),
            message_id=col(SentMark.message_id),
            attempts=Delivery.attempts + 1,
            lease_until=None,
            claimed_by=None,
            last_error=None,
        )
    )
    rows = int(result.rowcount)
    lost: list[tuple[int, int]] = []
    if rows < sum(m.deliveries for m in marks):  # some lease ran out first: say whose
        for mark in marks:
            done = session.exec(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.subscriber_id == mark.subscriber_id,
                    Delivery.message_id == mark.message_id,
                    col(Delivery.state) == DeliveryState.SENT,
                )
            ).one()
            if done < mark.deliveries:
                lost.append((mark.subscriber_id, mark.deliveries - int(done)))
    _core(session).execute(delete(SentMark).where(col(SentMark.id).in_(ids)))
    return Folded(len(marks), rows, lost)


def mark_failed_attempt(
    *,
    session: Session,
    delivery_ids: Sequence[int],
    worker: str,
    error: str,
    permanent: bool,
    retry_at: datetime,
    max_attempts: int,
) -> None:
    """A send failed: ``sending -> pending`` (due again at ``retry_at``), or ``-> failed``
    when the error is permanent or this was the last of ``max_attempts``."""
    attempts = col(Delivery.attempts) + 1
    state: Any = (
        DeliveryState.FAILED
        if permanent
        else case((attempts >= max_attempts, DeliveryState.FAILED), else_=DeliveryState.PENDING)
    )
    _core(session).execute(
        _mine(delivery_ids, worker).values(
            state=state,
            attempts=attempts,
            last_error=error[:500],
            next_attempt_at=None if permanent else retry_at,
            lease_until=None,
            claimed_by=None,
        )
    )


def release(*, session: Session, delivery_ids: Sequence[int], worker: str) -> None:
    """Claimed but not tried (the run stopped): back to pending, no attempt counted."""
    _core(session).execute(
        _mine(delivery_ids, worker).values(state=DeliveryState.PENDING, lease_until=None, claimed_by=None)
    )


def failures(*, session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Failed deliveries, a line per (subscriber, reason): for ``status``."""
    stmt = (
        select(Subscriber.email, Delivery.last_error, func.count(), func.max(Delivery.attempts))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.state) == DeliveryState.FAILED)
        .group_by(col(Subscriber.email), col(Delivery.last_error))
        .order_by(col(Subscriber.email))
        .limit(limit)
    )
    return [
        {"email": email, "reason": reason, "papers": int(n), "attempts": int(attempts)}
        for email, reason, n, attempts in session.exec(stmt)
    ]


def subscriber_papers(*, session: Session, subscriber_id: int, limit: int) -> list[tuple[Delivery, Paper]]:
    """Every paper that matched the subscriber (their private feed): newest first, best first within a day."""
    stmt = (
        select(Delivery, Paper)
        .join(Paper, col(Paper.id) == col(Delivery.paper_id))
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(col(Paper.first_seen_at).desc(), col(Delivery.score).desc(), col(Paper.id))
        .limit(limit)
    )
    return [(d, p) for d, p in session.exec(stmt)]


def find_delivery(*, session: Session, subscriber_id: int, paper_id: int) -> Delivery | None:
    stmt = select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.paper_id == paper_id)
    return session.exec(stmt).first()


# ---------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class NewTopicPaper:
    topic: str
    paper_id: int
    score: int
    terms: list[str]


def add_topic_papers(*, session: Session, rows: Sequence[NewTopicPaper], at: datetime) -> int:
    if not rows:
        return 0
    values = [
        {"topic": r.topic, "paper_id": r.paper_id, "score": r.score, "terms": r.terms, "created_at": at}
        for r in rows
    ]
    return _insert_new(session, TopicPaper, values, ["topic", "paper_id"])


def topic_papers(*, session: Session, topic: str, limit: int) -> list[tuple[TopicPaper, Paper]]:
    """The papers that matched ``topic`` (its public feed): newest first, best first within a day."""
    stmt = (
        select(TopicPaper, Paper)
        .join(Paper, col(Paper.id) == col(TopicPaper.paper_id))
        .where(TopicPaper.topic == topic)
        .order_by(col(Paper.first_seen_at).desc(), col(TopicPaper.score).desc(), col(Paper.id))
        .limit(limit)
    )
    return [(t, p) for t, p in session.exec(stmt)]


def search_papers(*, session: Session, words: str, limit: int) -> list[Paper]:
    """Papers whose key (folded title) holds ``words`` (already folded), newest first."""
    pattern = "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    stmt = (
        select(Paper)
        .where(col(Paper.key).like(pattern, escape="\\"))
        .order_by(col(Paper.first_seen_at).desc(), col(Paper.id))
        .limit(limit)
    )
    return list(session.exec(stmt))


# ---------------------------------------------------------------- status


def counts(*, session: Session) -> dict[str, Any]:
    papers = session.exec(select(func.count()).select_from(Paper)).one()
    files = session.exec(
        select(func.count()).select_from(IngestedFile).where(col(IngestedFile.error).is_(None))
    ).one()
    by_state = dict.fromkeys(DeliveryState.ALL, 0)
    for state, n in session.exec(select(Delivery.state, func.count()).group_by(Delivery.state)):
        by_state[state] = n
    subscribers = session.exec(
        select(func.count()).select_from(Subscriber).where(Subscriber.active == True)  # noqa: E712
    ).one()
    unsubscribed = session.exec(
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.active == True, col(Subscriber.unsubscribed_at).is_not(None))  # noqa: E712
    ).one()
    unmatched = session.exec(
        select(func.count()).select_from(Paper).where(col(Paper.matched_at).is_(None))
    ).one()
    last = session.exec(select(func.max(IngestedFile.ingested_at))).one()
    return {
        "papers": int(papers),
        "files": int(files),
        "subscribers": int(subscribers),
        "unsubscribed": int(unsubscribed),
        "unmatched_papers": int(unmatched),
        "deliveries": by_state,
        "last_ingest": last.isoformat() if isinstance(last, datetime) else None,
    }


# ---------------------------------------------------------------- job runs


class JobRun(SQLModel, table=True):
    """One run of a job (``poll``, ``deliver``, ``cycle``): for /healthz, /metrics and the status page."""

    __tablename__ = "job_runs"
    id: int | None = Field(default=None, primary_key=True)
    job: str
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    seconds: float
    ok: bool
    papers: int = 0  # new papers stored
    emails: int = 0  # emails sent


RUNS_KEPT_DAYS = 90


def record_run(*, session: Session, run: JobRun) -> None:
    """Keep the run, and forget runs older than ``RUNS_KEPT_DAYS``."""
    session.add(run)
    session.execute(
        delete(JobRun).where(col(JobRun.started_at) < run.started_at - timedelta(days=RUNS_KEPT_DAYS))
    )


def last_run(*, session: Session) -> JobRun | None:
    return session.exec(select(JobRun).order_by(col(JobRun.started_at).desc(), col(JobRun.id).desc())).first()


def run_stats(*, session: Session) -> list[tuple[str, int, float, int]]:
    """Per job: (job, runs, seconds in all, failed runs) over the runs kept."""
    stmt = select(
        JobRun.job, func.count(), func.sum(JobRun.seconds), func.sum(case((col(JobRun.ok), 0), else_=1))
    ).group_by(col(JobRun.job))
    return [
        (job, int(n), float(total or 0), int(failed or 0)) for job, n, total, failed in session.exec(stmt)
    ]


def daily_activity(*, session: Session, since: datetime) -> dict[date, tuple[int, int]]:
    """Per UTC day since ``since``: (papers first seen, emails sent by the recorded runs)."""
    out: dict[date, list[int]] = {}
    for (seen,) in session.execute(
        sa_select(col(Paper.first_seen_at)).where(col(Paper.first_seen_at) >= since)
    ):
        out.setdefault(seen.date(), [0, 0])[0] += 1
    runs = sa_select(col(JobRun.started_at), col(JobRun.emails)).where(
        col(JobRun.started_at) >= since, col(JobRun.emails) > 0
    )
    for started, emails in session.execute(runs):
        out.setdefault(started.date(), [0, 0])[1] += emails
    return {day: (p, e) for day, (p, e) in out.items()}
