"""The delivery pipeline stopped mid-run (SIGTERM sets the stop flag): the chunk being sent
and the chunk rendered ahead of it both give their unsent rows back, nothing stays
``sending``, and the next run sends the rest, each reader once. SQLite and PostgreSQL."""

from __future__ import annotations

import mailbox
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from pathlib import Path

from sqlmodel import select

from service import store
from service.cycle import App
from service.delivery import CLAIM_SUBSCRIBERS, retry_delay
from service.mailer import Connection, InProcessSender, MaildirTransport
from service.message import Mail
from service.settings import parse_settings
from tests.helpers import copy_digest

READERS = CLAIM_SUBSCRIBERS * 2 + 20  # three chunks: one sending, one rendered ahead, one not claimed


class StopAfter:
    """A maildir transport that raises the stop flag after ``count`` emails, as SIGTERM does."""

    def __init__(self, folder: Path, stop: threading.Event, count: int) -> None:
        self.inner, self.stop, self.count, self.sent = MaildirTransport(folder), stop, count, 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        async with self.inner.connect() as connection:
            yield _Counting(connection, self)


class _Counting:
    def __init__(self, connection: Connection, owner: StopAfter) -> None:
        self.connection, self.owner = connection, owner

    async def send(self, mail: Mail) -> None:
        await self.connection.send(mail)
        self.owner.sent += 1
        if self.owner.sent == self.owner.count:
            self.owner.stop.set()


def test_a_stop_mid_run_gives_back_what_was_not_sent(tmp_path: Path, database_url: str) -> None:
    readers = "".join(
        f"  - email: reader{i:03d}@example.org\n    keywords: [model, learning]\n" for i in range(READERS)
    )
    settings = parse_settings(
        f"""\
database: "{database_url}"
inbox: {tmp_path}/inbox
inbox_settle: 0s
email:
  maildir: {tmp_path}/mail
feeds:
  dir: {tmp_path}/feeds
subscribers:
{readers}""",
        source="test.yaml",
        base=tmp_path,
    )
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=0)
    stop = threading.Event()
    transport = StopAfter(tmp_path / "mail", stop, count=7)
    app = App(settings, sender=InProcessSender(transport), stop=stop, progress=False)
    try:
        app.cycle(send=False)  # ingest and match; nothing sent yet
        first = app.deliver()
        assert first.emails == 7 and first.not_tried > 0
        with store.reading(app.engine) as session:
            counts = store.counts(session=session)["deliveries"]
            marks = session.exec(select(store.SentMark)).all()
        assert counts["sending"] == 0 and marks == []  # every claim given back, every mark folded
        assert counts["sent"] > 0 and counts["pending"] > 0

        stop.clear()
        transport.count = -1  # no more stopping
        second = app.deliver()
        assert second.emails == READERS - 7 and second.not_tried == 0
        with store.reading(app.engine) as session:
            counts = store.counts(session=session)["deliveries"]
        assert counts["pending"] == counts["sending"] == 0
    finally:
        app.engine.dispose()
    received = Counter(
        str(message_from_bytes(m.as_bytes(), policy=policy.default)["To"])
        for m in mailbox.Maildir(tmp_path / "mail", create=False)
    )
    assert len(received) == READERS and set(received.values()) == {1}  # everyone once


def test_retry_delays_double_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, first=60, cap=3600, rng=rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        base = min(3600, 60 * 2 ** (n - 1))
        assert base * 0.5 <= delay < base  # jitter: between half and all of the base delay
    assert max(delays) < 3600


def test_a_run_with_nothing_due_starts_no_sending_process(tmp_path: Path, database_url: str) -> None:
    """A quiet ``run --once`` from cron must not start the SMTP child process (a Python
    interpreter, a third of a second of CPU) to send nothing."""
    from service.courier import CourierSender
    from service.settings import load_settings
    from tests.helpers import free_port, smtp_config

    config = smtp_config(tmp_path, database_url, free_port(), 3)  # no server listens there
    app = App(load_settings(config), progress=False)
    try:
        app.prepare_store()
        report = app.deliver()
        assert report.ok and report.emails == 0
        assert isinstance(app.sender, CourierSender) and app.sender.process is None
    finally:
        app.engine.dispose()
