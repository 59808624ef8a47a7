"""The store at a glance: what ``status``, ``check``, ``/healthz`` and ``/metrics`` read, in
plain SQL on the database driver's own connection (PEP 249), without SQLAlchemy.

``paperboy status`` and ``paperboy check`` run a dozen small queries; importing SQLAlchemy
and SQLModel to write them would cost those commands half a second of CPU, ten times the
queries. So these reads are written once, here, in SQL that SQLite and PostgreSQL both
speak, and run two ways:

- :func:`open_sqlite`: a ``sqlite3`` connection, read-only, on a store that is a SQLite
  file at this paperboy's newest schema; the commands start with it and import nothing
  of the store package;
- :func:`on_session`: the connection of a session the store package opened (PostgreSQL,
  a store to migrate first, the web server's ``/healthz`` and ``/metrics``).

Constants of paperboy's own (delivery states, ``LEFT``) are written into the SQL; text a
user typed is always a bound parameter, marked ``?`` and rewritten for drivers that mark
them ``%s`` (no ``?`` or ``%`` appears in the SQL otherwise).
"""

from __future__ import annotations

import functools
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .delivery_states import LEFT, DeliveryState
from .errors import NotFound
from .settings.base import sqlite_file
from .text import paper_key

if TYPE_CHECKING:
    from sqlmodel import Session

VERSIONS = Path(__file__).parent / "store" / "migrations" / "versions"

PENDING, FAILED, CANCELLED = DeliveryState.PENDING, DeliveryState.FAILED, DeliveryState.CANCELLED
LIMIT = 100  # lines of failures and retries status lists


class Reader:
    """A DB-API connection, and how its driver marks a parameter."""

    def __init__(self, connection: Any, *, marker: str = "?") -> None:
        self.connection = connection
        self.marker = marker

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            if params:
                cursor.execute(sql.replace("?", self.marker), params)
            else:
                cursor.execute(sql)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def on_session(session: Session) -> Reader:
    """The connection of a session of the store package, inside its transaction."""
    from .store.engine import driver_mark  # only with a session: the store is loaded already

    connection = session.connection()
    return Reader(connection.connection, marker=driver_mark(connection))


def open_sqlite(database: str) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite store the URL ``database`` names, when it is a
    file at this paperboy's newest schema; None otherwise (no file yet, a server, a schema
    to migrate: the caller opens the store package's engine instead)."""
    path = sqlite_file(database)
    if path is None or not path.is_file():
        return None
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        if revision(Reader(connection)) == head_revision():
            return connection
    except sqlite3.Error:
        pass  # not a store (yet): the engine's path says what is wrong
    connection.close()
    return None


@functools.cache
def head_revision() -> str:
    """The newest schema revision this paperboy knows: its last migration file's
    (a test holds this against Alembic's own answer)."""
    return max(known_revisions())


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(p.name.partition("_")[0] for p in VERSIONS.glob("[0-9]*_*.py"))


def revision(db: Reader) -> str | None:
    """The migration the store is at (raises when it has no ``alembic_version`` table)."""
    found = db.rows("SELECT version_num FROM alembic_version")
    return str(found[0][0]) if found and found[0][0] is not None else None


def at(value: Any) -> datetime:
    """A timestamp as the driver returns it (SQLite: naive UTC text), as an aware UTC time."""
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: Any) -> str | None:
    """A timestamp or NULL, as ``status`` shows it: to the second, with the zone."""
    return None if value is None else at(value).isoformat(timespec="seconds")


def counts(db: Reader) -> dict[str, Any]:
    """Papers, files, subscribers and deliveries by state: ``status``, ``/healthz``, ``/metrics``."""
    by_state = dict.fromkeys(DeliveryState.ALL, 0)
    cancelled_left = 0
    left_rows = f"COUNT(CASE WHEN last_error = '{LEFT}' THEN 1 END)"  # one scan of the outbox, not two
    for state, n, left_here in db.rows(f"SELECT state, COUNT(*), {left_rows} FROM deliveries GROUP BY state"):
        by_state[state] = int(n)
        cancelled_left += int(left_here) if state == CANCELLED else 0
    papers, unmatched, forgotten = db.rows(
        "SELECT COUNT(*), COUNT(*) - COUNT(matched_at), COUNT(forgotten_at) FROM papers"
    )[0]
    files, last = db.rows("SELECT COUNT(*) - COUNT(error), MAX(ingested_at) FROM ingested_files")[0]
    subscribers, unsubscribed, left = db.rows(
        "SELECT COUNT(CASE WHEN active THEN 1 END),"
        " COUNT(CASE WHEN active AND unsubscribed_at IS NOT NULL THEN 1 END),"
        " COUNT(CASE WHEN NOT active THEN 1 END) FROM subscribers"
    )[0]
    return {
        "papers": int(papers),
        "files": int(files),
        "subscribers": int(subscribers),
        "unsubscribed": int(unsubscribed),
        "left_configuration": int(left),
        "cancelled_left": int(cancelled_left),
        "unmatched_papers": int(unmatched),
        "deliveries": by_state,
        "last_ingest": None if last is None else at(last).isoformat(),
        "forgotten_papers": int(forgotten),
    }


def failures(db: Reader, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Failed deliveries, a line per (subscriber, reason)."""
    rows = db.rows(
        "SELECT s.email, d.last_error, COUNT(*), MAX(d.attempts) FROM deliveries d"
        f" JOIN subscribers s ON s.id = d.subscriber_id WHERE d.state = '{FAILED}'"
        f" GROUP BY s.email, d.last_error ORDER BY s.email LIMIT {int(limit)}"
    )
    return [
        {"email": email, "reason": reason, "papers": int(n), "attempts": int(attempts)}
        for email, reason, n, attempts in rows
    ]


def retrying(db: Reader, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Deliveries waiting for a retry after an error, a line per (subscriber, last error), with
    when the next attempt is due."""
    rows = db.rows(
        "SELECT s.email, d.last_error, COUNT(*), MAX(d.attempts), MIN(d.next_attempt_at) FROM deliveries d"
        f" JOIN subscribers s ON s.id = d.subscriber_id WHERE d.state = '{PENDING}' AND d.attempts > 0"
        f" GROUP BY s.email, d.last_error ORDER BY s.email LIMIT {int(limit)}"
    )
    return [
        {
            "email": email,
            "reason": reason,
            "papers": int(n),
            "attempts": int(attempts),
            "next_attempt": iso(due),
        }
        for email, reason, n, attempts, due in rows
    ]


class OptOut(NamedTuple):
    email: str
    unsubscribed_at: datetime


def opted_out(db: Reader) -> list[OptOut]:
    """The readers who unsubscribed with their one-click link (or by ``paperboy unsubscribe``)."""
    rows = db.rows(
        "SELECT email, unsubscribed_at FROM subscribers WHERE unsubscribed_at IS NOT NULL ORDER BY email"
    )
    return [OptOut(email, at(since)) for email, since in rows]


class LastRun(NamedTuple):
    job: str
    started_at: datetime
    seconds: float
    ok: bool
    error: str | None


def last_run(db: Reader) -> LastRun | None:
    """The newest job run (``poll``, ``deliver``, ``cycle``)."""
    rows = db.rows(
        "SELECT job, started_at, seconds, ok, error FROM job_runs ORDER BY started_at DESC, id DESC LIMIT 1"
    )
    if not rows:
        return None
    job, started, seconds, ok, error = rows[0]
    return LastRun(job, at(started), float(seconds), bool(ok), error)


def subscriber_overview(db: Reader) -> list[dict[str, Any]]:
    """Each subscriber in the store: token, whether they receive, pending papers, last email."""
    waiting = dict(
        db.rows(
            f"SELECT subscriber_id, COUNT(*) FROM deliveries WHERE state = '{PENDING}' GROUP BY subscriber_id"
        )
    )
    last_sent = dict(db.rows("SELECT subscriber_id, MAX(sent_at) FROM deliveries GROUP BY subscriber_id"))
    rows = db.rows(
        "SELECT id, email, name, token, active, unsubscribed_at, schedule, next_email_at"
        " FROM subscribers ORDER BY email"
    )
    return [
        {
            "email": email,
            "name": name,
            "token": token,
            "state": LEFT if not active else "unsubscribed" if unsubscribed else "receiving",
            "pending": int(waiting.get(id_, 0)),
            "last_sent": iso(last_sent.get(id_)),
            "schedule": schedule,  # None: schedule.deliver
            "next_email": iso(next_at),  # their own schedule's next fire
        }
        for id_, email, name, token, active, unsubscribed, schedule, next_at in rows
    ]


def paper_named(db: Reader, text: str) -> tuple[int, str]:
    """(id, title) of the paper whose title is ``text``, or of the one paper whose title holds it
    (folded); :class:`NotFound` says why when none or several do."""
    key = paper_key(text)
    if not key:
        raise NotFound(f"{text!r} holds no word of a title")
    exact = db.rows("SELECT id, title FROM papers WHERE key = ?", key)
    if exact:
        return int(exact[0][0]), str(exact[0][1])
    pattern = "%" + key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found = db.rows(
        "SELECT id, title FROM papers WHERE key LIKE ? ESCAPE '\\' ORDER BY first_seen_at DESC, id LIMIT 11",
        pattern,
    )
    if not found:
        raise NotFound(f"no paper in the store has a title like {text!r}")
    if len(found) > 1:
        listed = "\n".join(f"  {title}" for _, title in found[:10])
        more = "\n  ..." if len(found) > 10 else ""
        raise NotFound(f"{len(found)} papers have titles like {text!r}; say which:\n{listed}{more}")
    return int(found[0][0]), str(found[0][1])
