"""Shared test fixtures: real SQLite files, a real PostgreSQL schema, a real SMTP server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, create_engine, text

from service import store

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
POSTGRES_URL = os.environ.get("PAPERBOY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FIXED_NOW = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED_NOW


# ---------------------------------------------------------------- databases


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: no server here
        return f"no PostgreSQL at {POSTGRES_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    reason = _postgres_available()
    if reason and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    return reason


@pytest.fixture
def postgres_url(postgres_reason: str | None) -> Iterator[str]:
    """A fresh, empty schema on the PostgreSQL test server, dropped afterwards."""
    if postgres_reason:
        pytest.skip(postgres_reason)
    with scratch_schema(POSTGRES_URL, prefix="t_") as url:
        yield url


@contextmanager
def scratch_schema(server: str, *, prefix: str) -> Iterator[str]:
    """A URL for a new, empty schema on the PostgreSQL ``server``; the schema is dropped afterwards."""
    schema = prefix + uuid.uuid4().hex[:12]
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'paperboy.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'paperboy.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = store.make_engine(database_url)
    store.upgrade(eng)
    yield eng
    eng.dispose()


# ---------------------------------------------------------------- SMTP


class Sink:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.raw: list[bytes] = []  # each message as it came over the wire
        self.options: list[list[str]] = []  # each message's MAIL FROM parameters (BODY=8BITMIME...)

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        raw = envelope.original_content or envelope.content
        self.messages.append(message_from_bytes(raw, policy=policy.default))  # type: ignore[arg-type]
        self.raw.append(raw)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.options.append(list(envelope.mail_options))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(handler: object) -> Iterator[int]:
    """An aiosmtpd server on 127.0.0.1 with ``handler``, for the block: its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    with serving(sink) as port:
        yield sink, port


# ---------------------------------------------------------------- configs and the CLI


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def smtp_config(
    tmp_path: Path,
    database_url: str,
    port: int,
    people: int,
    *,
    extra: str = "",
    keywords: tuple[str, ...] = ("model",),
) -> Path:
    """A configuration delivering by SMTP to 127.0.0.1:``port``, for ``people`` readers
    (``reader<i>@example.org``, keywords taken in turn); ``extra``: more ``email:`` keys."""
    subscribers = "".join(
        f"  - email: reader{i}@example.org\n    keywords: [{keywords[i % len(keywords)]}]\n"
        for i in range(people)
    )
    return write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: "{database_url}"
inbox: {tmp_path}/inbox
inbox_settle: 0s
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, concurrency: 2}}
{extra}feeds:
  dir: {tmp_path}/feeds
http:
  port: {free_port()}
subscribers:
{subscribers}""",
    )


def copy_digest(name: str, inbox: Path, *, as_name: str | None = None, mtime: float | None = None) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / (as_name or name)
    shutil.copyfile(FIXTURES / name, target)
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return target


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``paperboy`` as a user does, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
