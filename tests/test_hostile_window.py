"""The one window for a duplicate, as the README states it: paperboy is killed after the
sending process has written a message's final dot and before the server answers. The
server has the whole message and delivers it; paperboy never recorded it as sent, so
when the lease runs out it sends it again, with the same Message-ID. The window is as
long as the server takes to answer the end of DATA (here, as long as the test holds the
answer back: the kill lands in between)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.helpers import ROOT, copy_digest, serving, smtp_config


class HoldsTheAnswer:
    """Keeps each whole message, then holds its 250 until ``release`` is set."""

    def __init__(self) -> None:
        self.messages: list[str] = []  # Message-IDs of the messages the server has whole
        self.whole = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.messages.append(str(msg["Message-ID"]))
        self.whole.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 OK"


def test_a_kill_between_the_final_dot_and_the_answer_delivers_the_email_twice(tmp_path: Path) -> None:
    handler = HoldsTheAnswer()
    database = f"sqlite:///{tmp_path}/paperboy.db"
    with serving(handler) as port:
        copy_digest("digest-a.txt", tmp_path / "inbox", mtime=time.time() - 3600)
        config = smtp_config(tmp_path, database, port, 1, extra="  lease: 1s\n")
        run = [sys.executable, "-m", "service", "--config", str(config), "run", "--once"]
        first = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert handler.whole.wait(60), "the message never reached the server"
            os.kill(first.pid, signal.SIGKILL)  # the final dot is written; the 250 is not sent
            first.wait(timeout=30)
        finally:
            handler.release.set()
        engine = create_engine(database)
        try:
            with engine.connect() as conn:
                states = conn.execute(text("SELECT DISTINCT state, lease_until FROM deliveries")).all()
            assert [s for s, _ in states] == ["sending"]  # never recorded as sent
            lease = max(datetime.fromisoformat(str(u)).replace(tzinfo=UTC) for _, u in states)
            while datetime.now(UTC) <= lease:  # the killed process's claim runs out
                time.sleep(0.1)
            second = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert second.returncode == 0, second.stderr
            with engine.connect() as conn:
                assert conn.execute(text("SELECT DISTINCT state FROM deliveries")).all() == [("sent",)]
        finally:
            engine.dispose()
    assert len(handler.messages) == 2 and len(set(handler.messages)) == 1  # twice, one Message-ID
