"""The sending process (service.courier) against a real aiosmtpd server on 127.0.0.1:
what it sends, what it hands back when the run stops, and what happens when
either side dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from sqlmodel import select

from service import store
from service.courier import WINDOW_PER_SESSION, CourierError, CourierSender, frame
from service.cycle import App
from service.mailer import Outcomes, SendError
from service.message import Mail
from service.settings import Smtp, load_settings
from tests.helpers import Sink, copy_digest, serving, smtp_config


class Refusing(Sink):
    """A sink that refuses every recipient whose address starts with "bad"."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address.startswith("bad"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SlowRcpt(Sink):
    """A sink that waits ``delay`` seconds before it answers each RCPT."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def slow_server() -> Iterator[tuple[SlowRcpt, int]]:
    sink = SlowRcpt(0.3)
    with serving(sink) as port:
        yield sink, port


def mail(i: int) -> Mail:
    """Email number ``i`` (its number is the subscriber id it carries)."""
    data = f"From: a@example.org\nTo: r{i}@example.org\nMessage-ID: <{i}@x>\nSubject: {i}\n\nBody {i}.\n"
    return Mail(f"r{i}@example.org", f"<{i}@x>", data.encode(), subscriber_id=i)


def smtp(port: int, concurrency: int = 1, rate: float | None = None) -> Smtp:
    return Smtp(host="127.0.0.1", port=port, starttls=False, timeout=10, concurrency=concurrency, rate=rate)


SENDER = "paperboy <a@example.org>"


@dataclass
class Driven:
    """A CourierSender with the outcomes it reports to: ``run(queue)`` as a delivery run calls it."""

    sender: CourierSender
    outcomes: Outcomes

    async def run(self, queue: asyncio.Queue[Mail | None]) -> None:
        await self.sender.run(queue, self.outcomes)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        return self.sender.process

    @property
    def in_flight(self) -> dict[int, Mail]:
        return self.sender.in_flight

    @property
    def lost(self) -> list[Mail]:
        return self.sender.lost


class Recorder:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.sent_at: list[float] = []
        self.failed: list[tuple[int, str, bool]] = []
        self.stop = threading.Event()

    def courier(
        self, port: int, concurrency: int = 1, *, rate: float | None = None, stop_after: int | None = None
    ) -> Driven:
        def sent(item: Mail) -> None:
            self.sent.append(item.subscriber_id)
            self.sent_at.append(time.monotonic())
            if stop_after is not None and len(self.sent) >= stop_after:
                self.stop.set()

        async def failed(item: Mail, exc: SendError) -> None:
            self.failed.append((item.subscriber_id, str(exc), exc.temporary))

        outcomes = Outcomes(took=lambda: None, sent=sent, failed=failed, stopped=self.stop.is_set)
        return Driven(CourierSender(smtp(port, concurrency, rate), sender=SENDER), outcomes)


def queued(items: list[Mail], *, end: bool = True) -> asyncio.Queue[Mail | None]:
    queue: asyncio.Queue[Mail | None] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    if end:
        queue.put_nowait(None)
    return queue


def left(queue: asyncio.Queue[Mail | None]) -> list[int]:
    out = []
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            out.append(item.subscriber_id)
    return sorted(out)


async def signal_mid_run(
    courier: Driven, queue: asyncio.Queue[Mail | None], ready: Callable[[], bool], *signals: int
) -> None:
    """Run ``courier`` over ``queue``; once ``ready()``, send ``signals`` to its child."""
    task = asyncio.create_task(courier.run(queue))
    while courier.process is None or not ready():
        await asyncio.sleep(0.01)
    for number in signals:
        courier.process.send_signal(number)
    await task


def test_every_email_is_sent_once_over_the_configured_sessions(smtp_server: tuple[Sink, int]) -> None:
    sink, port = smtp_server
    outcomes = Recorder()
    courier = outcomes.courier(port, concurrency=3)
    queue = queued([mail(i) for i in range(40)])
    asyncio.run(courier.run(queue))
    assert sorted(outcomes.sent) == list(range(40)) and outcomes.failed == []
    assert sorted(to for _, (to,) in sink.envelopes) == sorted(f"r{i}@example.org" for i in range(40))
    assert [m["Subject"] for m in sink.to("r7@example.org")] == ["7"]
    assert courier.lost == [] and left(queue) == []


def test_the_rate_holds_across_the_sessions_of_the_child(smtp_server: tuple[Sink, int]) -> None:
    """email.smtp.rate is kept where the sending happens: 20 emails at 20 a second over 2
    sessions take at least 19 intervals of 50 ms from the start of the run (the bucket's
    first token is taken after the run starts, so this bound holds on any machine however
    busy; without the limit a local sink takes well under half of that, child included)."""
    _, port = smtp_server
    outcomes = Recorder()
    started = time.monotonic()
    asyncio.run(outcomes.courier(port, concurrency=2, rate=20).run(queued([mail(i) for i in range(20)])))
    assert sorted(outcomes.sent) == list(range(20))
    assert outcomes.sent_at[-1] - started >= 19 / 20


def test_a_stop_hands_back_what_the_child_had_not_started(slow_server: tuple[SlowRcpt, int]) -> None:
    sink, port = slow_server
    outcomes = Recorder()
    courier = outcomes.courier(port, stop_after=1)
    queue = queued([mail(i) for i in range(8)], end=False)  # the run stops, it does not end
    asyncio.run(courier.run(queue))
    delivered = sorted(int(to[1:].split("@")[0]) for _, (to,) in sink.envelopes)
    assert sorted(outcomes.sent) == delivered and 1 <= len(delivered) <= 2  # the one under way finishes
    assert courier.lost == []
    assert sorted(delivered + left(queue)) == list(range(8))  # the rest is back in the queue, untried


def test_an_error_comes_back_with_its_kind() -> None:
    sink, outcomes = Refusing(), Recorder()
    with serving(sink) as port:
        courier = outcomes.courier(port)
        bad = Mail("bad@example.org", "<bad@x>", b"To: bad@example.org\n\nx\n", subscriber_id=0)
        asyncio.run(courier.run(queued([bad, mail(1)])))
    assert outcomes.sent == [1] and [to for _, (to,) in sink.envelopes] == ["r1@example.org"]
    [(n, reason, temporary)] = outcomes.failed
    assert n == 0 and reason == "refused: bad@example.org: 550 5.1.1 no such user" and not temporary


def test_a_dead_child_is_an_error_and_what_it_held_is_lost_not_handed_back(
    slow_server: tuple[SlowRcpt, int],
) -> None:
    _, port = slow_server
    outcomes = Recorder()
    courier = outcomes.courier(port)
    queue = queued([mail(i) for i in range(30)])
    with pytest.raises(CourierError, match="exited with code -9"):
        asyncio.run(signal_mid_run(courier, queue, lambda: bool(courier.in_flight), signal.SIGKILL))
    lost, rest = sorted(item.subscriber_id for item in courier.lost), left(queue)
    # handed to the child and never answered: maybe sent, so neither given back nor sent
    assert lost and not set(lost) & set(outcomes.sent) and not set(lost) & set(rest)
    assert sorted(lost + outcomes.sent + rest) == list(range(30))


def test_ctrl_c_and_sigterm_are_for_the_parent_to_handle(slow_server: tuple[SlowRcpt, int]) -> None:
    """Both reach the child too (a terminal's process group, systemd's control group); it
    goes on, and the parent decides (here: it sends everything)."""
    sink, port = slow_server
    sink.delay = 0.05
    outcomes = Recorder()
    courier = outcomes.courier(port)
    queue = queued([mail(i) for i in range(10)])
    asyncio.run(signal_mid_run(courier, queue, lambda: bool(outcomes.sent), signal.SIGINT, signal.SIGTERM))
    assert sorted(outcomes.sent) == list(range(10)) and courier.lost == []
    assert courier.process is not None and courier.process.returncode == 0


def read_answers(stream: IO[bytes]) -> list[dict[str, object]]:
    """Every frame the child wrote until it closed its end."""
    out = []
    while len(head := stream.read(8)) == 8:
        hlen, blen = struct.unpack("!II", head)
        out.append(json.loads(stream.read(hlen)))
        stream.read(blen)
    return out


class HeldRcpt(Sink):
    """A sink that holds every RCPT unanswered until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()  # a RCPT has come and waits for its answer
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        self.asked.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_the_child_leaves_at_once_when_its_parent_dies() -> None:
    """Its stdin closes without "stop": it exits in the middle of a session (its RCPT
    still unanswered), and the server, which never saw the DATA, delivers nothing."""
    sink = HeldRcpt()
    with serving(sink) as port:
        child = subprocess.Popen(
            [sys.executable, "-m", "service.courier"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(frame({"smtp": smtp(port).model_dump(), "sender": SENDER}))
            for i in range(3):
                m = mail(i)
                child.stdin.write(
                    frame({"seq": i, "to": m.to, "message_id": m.message_id, "eight_bit": False}, m.data)
                )
            child.stdin.flush()
            assert sink.asked.wait(timeout=60)  # the first email is waiting for its RCPT answer
            child.stdin.close()  # the parent is gone
            assert child.wait(timeout=60) == 1  # gone, the RCPT still unanswered
            assert read_answers(child.stdout) == []  # no answer: nothing was sent
        finally:
            sink.release.set()
            if child.poll() is None:
                child.kill()
                child.wait(timeout=60)
            child.stdout.close()
    assert sink.messages == []


# ---------------------------------------------------------------- a delivery run with its sending process


class StopAfter(Sink):
    """A sink that raises ``stop`` (as SIGTERM does) once it has ``count`` messages."""

    def __init__(self, stop: threading.Event, count: int) -> None:
        super().__init__()
        self.stop, self.count = stop, count

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        answer = await super().handle_DATA(server, session, envelope)
        if len(self.messages) >= self.count:
            self.stop.set()
        return answer


def smtp_app(tmp_path: Path, database_url: str, port: int, stop: threading.Event, readers: int) -> App:
    """Readers ``reader<i>@example.org`` matched (nothing sent yet), delivering to ``port``."""
    config = smtp_config(tmp_path, database_url, port, readers, extra="  lease: 10m\n")
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=0)
    app = App(load_settings(config), stop=stop, progress=False)
    app.cycle(send=False)  # ingest and match; nothing sent yet
    return app


def states(app: App) -> dict[str, set[str]]:
    """Each reader's outbox states."""
    with store.reading(app.engine) as session:
        rows = session.exec(
            select(store.Subscriber.email, store.Delivery.state).join(
                store.Delivery, store.Delivery.subscriber_id == store.Subscriber.id
            )
        ).all()
    out: dict[str, set[str]] = {}
    for email, state in rows:
        out.setdefault(email, set()).add(state)
    return out


def test_a_run_stopped_mid_way_gives_back_what_the_sending_process_had_not_sent(
    tmp_path: Path, database_url: str
) -> None:
    stop = threading.Event()
    sink = StopAfter(stop, count=5)
    with serving(sink) as port:
        app = smtp_app(tmp_path, database_url, port, stop, readers=30)
        try:
            first = app.deliver()
            assert first.not_tried > 0 and 5 <= first.emails < 30
            assert first.emails + first.not_tried <= 30
            by_reader = states(app)
            assert all(len(s) == 1 for s in by_reader.values())  # a digest's rows move together
            assert sum(s == {"sent"} for s in by_reader.values()) == first.emails == len(sink.messages)
            assert not any("sending" in s for s in by_reader.values())  # every claim given back
            stop.clear()
            sink.count = 10_000
            second = app.deliver()
            assert second.emails == 30 - first.emails and second.not_tried == 0
        finally:
            app.engine.dispose()
    everyone = sorted(f"reader{i}@example.org" for i in range(30))
    assert sorted(to for _, (to,) in sink.envelopes) == everyone  # each reader once


def courier_children() -> list[int]:
    """Process ids of this process's children running service.courier (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid() and b"service.courier" in command:
                out.append(int(entry.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the child in /proc (Linux)")
def test_a_sending_process_that_dies_ends_the_run_and_leaves_its_emails_to_the_lease(
    tmp_path: Path, database_url: str
) -> None:
    sink = SlowRcpt(0.1)
    errors: list[BaseException] = []
    with serving(sink) as port:
        app = smtp_app(tmp_path, database_url, port, threading.Event(), readers=30)

        def deliver() -> None:
            try:
                app.deliver()
            except BaseException as exc:  # kept for the assertion below
                errors.append(exc)

        worker = threading.Thread(target=deliver)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(sink.messages) < 3 or not courier_children():
                assert time.monotonic() < deadline and worker.is_alive()
                time.sleep(0.01)
            for pid in courier_children():
                os.kill(pid, signal.SIGKILL)
            worker.join(timeout=30)
            assert not worker.is_alive()
            by_reader = states(app)
        finally:
            app.engine.dispose()
    assert len(errors) == 1 and isinstance(errors[0], CourierError)
    received = {to for _, (to,) in sink.envelopes}
    sent = {email for email, s in by_reader.items() if s == {"sent"}}
    held = {email for email, s in by_reader.items() if s == {"sending"}}  # in the child when it died
    pending = {email for email, s in by_reader.items() if s == {"pending"}}
    assert sent | held | pending == set(by_reader) and len(by_reader) == 30
    assert sent <= received <= sent | held  # recorded only what arrived; nothing arrived unaccounted
    assert 1 <= len(held) <= 2 * WINDOW_PER_SESSION  # at most the emails handed to it ahead
    assert pending  # the rest was given back, due at once
