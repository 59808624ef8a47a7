"""What the tests share besides fixtures: paths, the fixed clock, an SMTP sink,
configurations, the CLI as a child process. Fixtures are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
POSTGRES_URL = os.environ.get("PAPERBOY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FIXED_NOW = datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, actual: str) -> None:
    """``actual`` must be the golden file ``name``; PAPERBOY_REGEN_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("PAPERBOY_REGEN_GOLDEN"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs; PAPERBOY_REGEN_GOLDEN=1 rewrites it"


def fixed_clock() -> datetime:
    return FIXED_NOW


def postgres_available() -> str | None:
    """None when the PostgreSQL test server answers; else why not."""
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: no server here
        return f"no PostgreSQL at {POSTGRES_URL}: {type(exc).__name__}"


@contextmanager
def admin_connection() -> Iterator[Connection]:
    """A connection to the PostgreSQL test server outside any transaction (CREATE DATABASE)."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def database_at(name: str) -> str:
    """The URL of database ``name`` on the PostgreSQL test server."""
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


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
def serving(handler: object, **kwargs: Any) -> Iterator[int]:
    """An aiosmtpd server on 127.0.0.1 with ``handler`` (and Controller ``kwargs``),
    for the block: its port."""
    port = kwargs.pop("port", None) or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def fetch(app: Any, path: str) -> Any:
    """GET ``path`` from a web server started for ``app`` on a free port, then stopped."""
    import httpx

    from service.server import Server

    port = free_port()
    server = Server(lambda: app, host="127.0.0.1", port=port)
    assert server.start()
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    finally:
        server.stop()


# ---------------------------------------------------------------- configs and the CLI


def sync(session: Any, people: list[tuple[str, str | None]], at: datetime = FIXED_NOW) -> dict[str, Any]:
    """``store.sync_subscribers``, then the active subscribers by address (what tests look at)."""
    from service import store

    store.sync_subscribers(session=session, people=people, at=at)
    return store.active_subscribers(session=session)


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def settings_for(tmp_path: Path, database_url: str, port: int) -> str:
    """The web tests' configuration: two topics, two subscribers, the server on ``port``."""
    return f"""\
database: "{database_url}"
inbox: {tmp_path}/inbox
inbox_settle: 0s
email:
  from: "paperboy <papers@example.org>"
  maildir: {tmp_path}/mail
feeds:
  dir: {tmp_path}/feeds
  title: Paper Desk
http:
  port: {port}
  public_url: http://127.0.0.1:{port}/
topics:
  3d-vision:
    title: 3D vision
    description: Gaussians, NeRFs and friends
    keywords: [gaussian splatting, nerf]
  llm-safety:
    title: LLM safety
    keywords: [jailbreak, alignment]
subscribers:
  - email: alice@example.org
    name: Alice
    keywords: [TÜLU, gaussian]
  - email: bob@example.org
    keywords: [diffusion]
"""


def local_yaml(tmp_path: Path, subscribers: str = "", *, extra: str = "", email: str | None = None) -> str:
    """A configuration that keeps everything in ``tmp_path``: a SQLite store, the inbox (files
    taken at once), a maildir and the feeds. ``subscribers``: the lines of the list (none: an
    empty list); ``extra``: more top-level keys, each line ending in a newline; ``email``:
    another ``email:`` key in place of the maildir's."""
    return (
        f"database: sqlite:///{tmp_path}/paperboy.db\n"
        f"inbox: {tmp_path}/inbox\n"
        "inbox_settle: 0s\n"
        f"{email or f'email: {{maildir: {tmp_path}/mail}}'}\n"
        f"feeds: {{dir: {tmp_path}/feeds}}\n"
        f"{extra}subscribers:{'' if subscribers else ' []'}\n{subscribers}"
    )


def local_config(tmp_path: Path, subscribers: str = "", *, extra: str = "", email: str | None = None) -> Path:
    """:func:`local_yaml` written to ``tmp_path/paperboy.yaml``."""
    text = local_yaml(tmp_path, subscribers, extra=extra, email=email)
    return write_config(tmp_path / "paperboy.yaml", text)


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


class Service:
    """``paperboy --config CONFIG run`` (or another command: ``args``) as a child process, its
    log lines read as they come (``log``). Use as a context manager: a process still running at
    the end is killed."""

    def __init__(self, config: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--config", str(config), *(args or ("run",))],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        self.log: list[str] = []
        self.reader = threading.Thread(target=lambda: self.log.extend(iter(stderr.readline, "")), daemon=True)
        self.reader.start()

    def wait_for(self, event: str, *, after: int = 0, timeout: float = 60) -> int:
        """The index of the first log line from ``after`` on that holds ``event``; waits for it
        (the timeout bounds a stuck process; it is no claim about speed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((i for i, line in enumerate(list(self.log)) if i >= after and event in line), None)
            if found is not None:
                return found
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no {event} in:\n{''.join(self.log)}")

    def logged(self, event: str) -> bool:
        return any(event in line for line in list(self.log))

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@contextlib.contextmanager
def serving_app(tmp_path: Path, text: str, port: int) -> Iterator[tuple[Any, str]]:
    """The configuration ``text`` (written to ``tmp_path/paperboy.yaml``, its server on
    ``port``) over a store that has ingested digest-a, its web server started: the App and
    the base URL."""
    from service.cycle import App
    from service.server import Server
    from service.settings import parse_settings

    (tmp_path / "paperboy.yaml").write_text(text, encoding="utf-8")
    settings = parse_settings(text, source=str(tmp_path / "paperboy.yaml"), base=tmp_path)
    (tmp_path / "inbox").mkdir()
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app = App(settings, progress=False)
    app.run_job("poll", send=False)  # ingest, match, feeds; no email yet
    server = Server(lambda: app, host="127.0.0.1", port=port)
    assert server.start()
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        app.engine.dispose()


def children_die(monkeypatch: Any, folder: Path, said: str, code: int = 3) -> None:
    """Every child process paperboy starts (:mod:`service.children`) reads its stdin, says
    ``said`` on stderr and exits with ``code``: a parser or a feeds process that dies."""
    dying = folder / "python"
    dying.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{said}' >&2\nexit {code}\n")
    dying.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(dying))
