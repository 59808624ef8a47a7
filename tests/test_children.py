"""Every child process runs this paperboy's code, whatever directory paperboy was started from:
one holding a ``service`` package of its own (``python -m`` would put it first) changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service import digest_reader, publish_beside
from service.courier import CourierSender
from service.ingest import ingest_file
from service.mailer import Outcomes, SendError
from service.message import Mail
from service.settings import Smtp
from tests.helpers import FIXED_NOW, Sink, copy_digest
from tests.test_publish_beside import app_in

DECOY = 'raise ImportError("this service package is not paperboy")\n'


@pytest.fixture
def decoy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory: it holds a ``service`` package that is not paperboy."""
    folder = tmp_path / "elsewhere"
    (folder / "service").mkdir(parents=True)
    (folder / "service" / "__init__.py").write_text(DECOY)
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.usefixtures("decoy")
def test_the_courier_sends_from_any_directory(smtp_server: tuple[Sink, int]) -> None:
    sink, port = smtp_server
    sent: list[int] = []
    failed: list[str] = []

    async def fail(item: Mail, exc: SendError) -> None:
        failed.append(str(exc))

    def mail(i: int) -> Mail:
        data = f"From: a@example.org\nTo: r{i}@example.org\nMessage-ID: <{i}@x>\nSubject: {i}\n\nBody.\n"
        return Mail(f"r{i}@example.org", f"<{i}@x>", data.encode(), subscriber_id=i)

    queue: asyncio.Queue[Mail | None] = asyncio.Queue()
    for i in range(3):
        queue.put_nowait(mail(i))
    queue.put_nowait(None)
    smtp = Smtp(host="127.0.0.1", port=port, starttls=False, timeout=10, concurrency=1)
    outcomes = Outcomes(
        took=lambda: None, sent=lambda m: sent.append(m.subscriber_id), failed=fail, stopped=lambda: False
    )
    asyncio.run(CourierSender(smtp, sender="a@example.org").run(queue, outcomes))
    assert (sorted(sent), failed, len(sink.envelopes)) == ([0, 1, 2], [], 3)


def test_the_parser_of_a_big_digest_reads_from_any_directory(
    decoy: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest_reader, "PARALLEL_BYTES", 0)
    path = copy_digest("digest-a.txt", decoy.parent / "inbox")
    report = ingest_file(engine, path, at=FIXED_NOW)
    assert (report.status, report.new_papers) == ("ingested", 39)


def test_the_feeds_beside_a_delivery_run_are_written_from_any_directory(
    decoy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    app = app_in(decoy.parent / "store")
    app.cycle(send=False)
    for feed in app.settings.feeds.dir.rglob("*.atom"):
        feed.unlink()
    writing = publish_beside.start(app.engine, app.settings, at=FIXED_NOW)
    assert writing is not None and writing.finish() == 4
