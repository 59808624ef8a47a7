"""Delivery against an SMTP server that misbehaves on cue, on SQLite and PostgreSQL.

The server is a real aiosmtpd on 127.0.0.1 whose handler answers 451 to the
first tries, refuses one recipient with 550, drops the connection in the
middle of DATA, or stalls past the client's timeout. Each scenario runs
paperboy's cycle (in process, with a clock the test moves forward) until
nothing is due, then checks that every deliverable email arrived exactly
once and that the undeliverable ones are ``failed`` with their reason.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from service import store
from service.cycle import App
from service.settings import parse_settings
from tests.helpers import FIXED_NOW, copy_digest, serving

SUBSCRIBERS = ["alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"]


class Misbehaving:
    """An aiosmtpd handler that keeps what it accepts and fails as told.

    ``temporary``: answer DATA with 451 this many times in all, then accept.
    ``refuse``: answer RCPT TO for these addresses with 550.
    ``drop``: close the connection in the middle of DATA this many times.
    ``stall``: sleep past the client's timeout in DATA this many times.
    """

    def __init__(
        self, *, temporary: int = 0, refuse: tuple[str, ...] = (), drop: int = 0, stall: int = 0
    ) -> None:
        self.temporary, self.refuse, self.drop, self.stall = temporary, refuse, drop, stall
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.answers: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.refuse:
            self.answers.append(f"550 {address}")
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.temporary:
            self.temporary -= 1
            self.answers.append("451")
            return "451 4.3.0 mailbox busy, try again later"
        if self.drop:
            self.drop -= 1
            self.answers.append("drop")
            server.transport.close()  # the client never hears whether the message went through
            return "421 4.3.2 closing"
        if self.stall:
            self.stall -= 1
            self.answers.append("stall")
            await asyncio.sleep(3)  # past the client's 1 s timeout
            return "451 4.4.2 too late"
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt, str(msg["Message-ID"])))
        self.answers.append("250")
        return "250 OK queued"


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        app.engine.dispose()
    gc.collect()  # a connection or transport left open shows up here, in this test, not in a later one


@pytest.fixture
def serve() -> Iterator[object]:
    with ExitStack() as servers:
        yield lambda handler: servers.enter_context(serving(handler))


class Clock:
    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now


def make_app(tmp_path: Path, database_url: str, port: int, clock: Clock, apps: list[App]) -> App:
    subscribers = "".join(
        f"  - email: {email}\n    keywords: [model, LLM, learning, vision, language]\n"
        for email in SUBSCRIBERS
    )
    settings = parse_settings(
        f"""\
database: {database_url}
inbox: {tmp_path}/inbox
inbox_settle: 0s
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, timeout: 1s, concurrency: 2}}
  max_attempts: 3
  retry_after: 1m
feeds:
  dir: {tmp_path}/feeds
subscribers:
{subscribers}""",
        source="test.yaml",
        base=tmp_path,
    )
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=0)
    app = App(settings, clock=clock, progress=False)
    apps.append(app)
    return app


def run_until_quiet(app: App, clock: Clock, *, rounds: int = 6) -> None:
    """Run cycles, moving the clock past every retry delay, until nothing is due."""
    for _ in range(rounds):
        app.cycle()
        clock.now += timedelta(hours=1)


def outcome(app: App) -> tuple[dict[str, int], list[dict[str, object]]]:
    with store.reading(app.engine) as session:
        return store.counts(session=session)["deliveries"], store.failures(session=session)


def exactly_once(handler: Misbehaving, expected: list[str]) -> None:
    recipients = [rcpt for rcpt, _ in handler.received]
    assert sorted(recipients) == sorted(expected)  # each deliverable address once, no duplicates
    assert len({mid for _, mid in handler.received}) == len(handler.received)


def test_451_then_accepted(tmp_path: Path, database_url: str, serve, apps) -> None:  # type: ignore[no-untyped-def]
    handler = Misbehaving(temporary=3)
    clock = Clock()
    app = make_app(tmp_path, database_url, serve(handler), clock, apps)

    first = app.cycle()
    assert len(first.delivery.retrying) == 3 and first.delivery.emails == 1 and not first.ok
    with store.reading(app.engine) as session:
        pending = store.counts(session=session)["deliveries"]["pending"]
    assert pending > 0
    assert app.cycle().delivery.emails == 0  # not due before the retry delay
    run_until_quiet(app, clock)

    counts, failed = outcome(app)
    assert counts["pending"] == counts["sending"] == counts["failed"] == 0
    assert failed == []
    exactly_once(handler, SUBSCRIBERS)


def test_550_for_one_recipient_among_many(tmp_path: Path, database_url: str, serve, apps) -> None:  # type: ignore[no-untyped-def]
    handler = Misbehaving(refuse=("bob@example.org",))
    clock = Clock()
    app = make_app(tmp_path, database_url, serve(handler), clock, apps)

    report = app.cycle().delivery
    run_until_quiet(app, clock)

    assert [email for email, _ in report.failed] == ["bob@example.org"]
    exactly_once(handler, [e for e in SUBSCRIBERS if e != "bob@example.org"])
    assert handler.answers.count("550 bob@example.org") == 1  # a permanent error is not retried
    counts, failed = outcome(app)
    assert counts["pending"] == counts["sending"] == 0 and counts["failed"] > 0
    [bob] = failed
    assert bob["email"] == "bob@example.org" and bob["attempts"] == 1
    assert "550" in str(bob["reason"]) and "no such user" in str(bob["reason"])


def test_connection_dropped_in_the_middle_of_data(tmp_path: Path, database_url: str, serve, apps) -> None:  # type: ignore[no-untyped-def]
    handler = Misbehaving(drop=2)
    clock = Clock()
    app = make_app(tmp_path, database_url, serve(handler), clock, apps)

    first = app.cycle().delivery
    assert first.retrying and all("network" in reason for _, reason in first.retrying)
    run_until_quiet(app, clock)

    counts, failed = outcome(app)
    assert counts["pending"] == counts["sending"] == counts["failed"] == 0 and failed == []
    exactly_once(handler, SUBSCRIBERS)


def test_a_stall_past_the_timeout(tmp_path: Path, database_url: str, serve, apps) -> None:  # type: ignore[no-untyped-def]
    handler = Misbehaving(stall=1)
    clock = Clock()
    app = make_app(tmp_path, database_url, serve(handler), clock, apps)

    first = app.cycle().delivery
    assert len(first.retrying) == 1 and "network" in first.retrying[0][1]
    run_until_quiet(app, clock)

    counts, failed = outcome(app)
    assert counts["pending"] == counts["sending"] == counts["failed"] == 0 and failed == []
    exactly_once(handler, SUBSCRIBERS)


def test_a_server_that_never_accepts_ends_in_failed_after_max_attempts(
    tmp_path: Path, database_url: str, serve, apps
) -> None:  # type: ignore[no-untyped-def]
    handler = Misbehaving(temporary=10_000)
    clock = Clock()
    app = make_app(tmp_path, database_url, serve(handler), clock, apps)

    run_until_quiet(app, clock, rounds=5)

    counts, failed = outcome(app)
    assert counts["pending"] == counts["sending"] == counts["sent"] == 0
    assert sorted(f["email"] for f in failed) == SUBSCRIBERS
    assert all(f["attempts"] == 3 and str(f["reason"]).startswith("451") for f in failed)
    assert handler.answers.count("451") == 3 * len(SUBSCRIBERS)  # max_attempts each, then no more
    assert handler.received == []
