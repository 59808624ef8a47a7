"""One scheduler at a time: the leader lock of ``paperboy run``.

Several ``paperboy run`` processes may share one database (PostgreSQL across
machines, or SQLite on one). Deliveries are safe to share, since rows are
claimed (see :mod:`service.delivery`), but only one process should run the
schedule. The first to take the lock schedules; the others wait in standby
and take over when it goes away.

- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) held by one
  open connection; the server drops it when the process dies.
- SQLite: an exclusive ``flock`` on ``<database>.leader`` beside the file;
  the kernel drops it when the process dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

LEADER_LOCK = 0x7061_7065_7262_6F78  # "paperbox": not the migration lock's key


class Leader(Protocol):
    def try_acquire(self) -> bool: ...
    def holds(self) -> bool: ...
    def release(self) -> None: ...


class PostgresLeader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    def try_acquire(self) -> bool:
        conn = self.engine.connect()
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}).scalar())
        conn.commit()  # the lock belongs to the session, not to this transaction
        if got:
            self.conn = conn
        else:
            conn.close()
        return got

    def holds(self) -> bool:
        """Still connected (a lost connection means a lost lock)."""
        if self.conn is None:
            return False
        try:
            self.conn.execute(text("SELECT 1"))
            self.conn.commit()
        except DBAPIError:
            self.conn = None
            return False
        return True

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK})
                self.conn.commit()
            finally:
                self.conn.close()
                self.conn = None


class FileLeader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held while leading)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.file = handle
        return True

    def holds(self) -> bool:
        return self.file is not None

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def leader_for(engine: Engine, *, fallback_dir: Path) -> Leader:
    """The lock for ``engine``'s database (a file in ``fallback_dir`` for an in-memory SQLite)."""
    url = make_url(str(engine.url))
    if url.get_backend_name() == "postgresql":
        return PostgresLeader(engine)
    if url.database and url.database != ":memory:":
        return FileLeader(Path(url.database + ".leader"))
    return FileLeader(fallback_dir / "paperboy.leader")
