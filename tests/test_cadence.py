"""Each reader's cadence (issue 17): subscribers[].schedule (daily, weekly or a cron line) and
subscribers[].timezone. A weekly reader gets one email with the week's best, while their feed
and page follow every digest; a failed send is retried without waiting a week; the running
service's deliver job fires on every reader's schedule. On a clock the test moves."""

from __future__ import annotations

import mailbox
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from service import store
from service.cycle import App
from service.mailer import Connection, InProcessSender, SendError
from service.message import Mail
from service.scheduler import delivery_trigger
from service.settings import ConfigError, parse_settings
from tests.helpers import FIXTURES

TUESDAY = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def settings_at(tmp_path: Path, database_url: str) -> str:
    return f"""\
database: "{database_url}"
inbox: {tmp_path}/inbox
inbox_settle: 0s
timezone: UTC
schedule: {{deliver: "0 8 * * *"}}
email: {{maildir: {tmp_path}/mail, max_papers: 100}}
feeds: {{dir: {tmp_path}/feeds}}
http: {{enabled: false}}
subscribers:
  - email: alice@example.org
    keywords: [model]
  - email: wendy@example.org
    keywords: [model]
    schedule: weekly
  - email: dora@example.org
    keywords: [model]
    schedule: daily
    timezone: America/New_York
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def inbox(tmp_path: Path) -> dict[str, int]:
    """Emails in the maildir, by recipient."""
    out: dict[str, int] = {}
    for msg in mailbox.Maildir(tmp_path / "mail", create=False):
        out[str(msg["To"])] = out.get(str(msg["To"]), 0) + 1
    return out


def deliver_digest(tmp_path: Path, app: App, name: str | None) -> None:
    if name:
        shutil.copy(FIXTURES / name, tmp_path / "inbox" / name)
    app.cycle()


def test_a_weekly_reader_gets_the_weeks_best_in_one_email(tmp_path: Path, database_url: str) -> None:
    settings = parse_settings(settings_at(tmp_path, database_url), source="t.yaml", base=tmp_path)
    (tmp_path / "inbox").mkdir()
    clock = Clock(TUESDAY)
    app = App(settings, clock=clock, progress=False)
    try:
        deliver_digest(tmp_path, app, "digest-a.txt")  # Tuesday 08:00 UTC
        assert inbox(tmp_path) == {"alice@example.org": 1}  # dora: 07:00 in New York is 12:00 UTC
        with store.reading(app.engine) as session:
            people = {s.email: s for s in store.active_subscribers(session=session).values()}
        assert people["wendy@example.org"].next_email_at == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)  # Monday
        assert people["dora@example.org"].next_email_at == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        assert people["alice@example.org"].next_email_at is None

        clock.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        deliver_digest(tmp_path, app, None)
        assert inbox(tmp_path) == {"alice@example.org": 1, "dora@example.org": 1}

        clock.now = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # Wednesday: another digest
        deliver_digest(tmp_path, app, "digest-c.txt")
        assert inbox(tmp_path) == {"alice@example.org": 2, "dora@example.org": 1}
        # Wendy's feed follows every digest, though her email waits for Monday
        wendy = people["wendy@example.org"]
        feed = feedparser.parse((tmp_path / "feeds" / "u" / f"{wendy.token}.atom").read_bytes())
        with store.reading(app.engine) as session:
            assert wendy.id is not None
            matched = store.subscriber_paper_count(session=session, subscriber_id=wendy.id)
        assert len(feed.entries) == matched > 0

        clock.now = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)  # Monday 07:00: her schedule fires
        deliver_digest(tmp_path, app, None)
        counts = inbox(tmp_path)
        assert counts["wendy@example.org"] == 1  # one email with both digests' papers
        [weekly] = [
            m for m in mailbox.Maildir(tmp_path / "mail", create=False) if m["To"] == "wendy@example.org"
        ]
        text = weekly.get_payload()[0].get_payload(decode=True).decode()
        assert text.startswith(f"Hello,\n\n{matched} new papers matched your rules")
        with store.reading(app.engine) as session:
            again = store.subscriber_by_email(session=session, email="wendy@example.org")
        assert again is not None and again.next_email_at == datetime(2026, 12, 14, 7, 0, tzinfo=UTC)
    finally:
        app.engine.dispose()


class FailsOnce:
    """A transport whose first send is refused for now (451), the next ones accepted."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refused = 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        yield self

    async def send(self, mail: Mail) -> None:
        if not self.refused:
            self.refused += 1
            raise SendError("451 try again later", temporary=True)
        self.sent.append(mail.to)


def test_a_failed_weekly_email_is_retried_without_waiting_a_week(tmp_path: Path, database_url: str) -> None:
    text = settings_at(tmp_path, database_url).replace(
        "  - email: alice@example.org\n    keywords: [model]\n", ""
    )
    text = text.replace("  - email: dora@example.org\n    keywords: [model]\n    schedule: daily\n", "")
    text = text.replace("    timezone: America/New_York\n", "")
    text = text.replace("email: {", "email: {retry_after: 10m, ")
    settings = parse_settings(text, source="t.yaml", base=tmp_path)
    (tmp_path / "inbox").mkdir()
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    clock = Clock(datetime(2026, 12, 7, 6, 0, tzinfo=UTC))  # Monday, an hour before her schedule
    transport = FailsOnce()
    app = App(settings, clock=clock, sender=InProcessSender(transport), progress=False)
    try:
        app.cycle()
        assert transport.refused == 0 and transport.sent == []  # not due yet
        clock.now = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
        app.cycle()
        assert transport.refused == 1 and transport.sent == []  # due, tried, refused for now
        clock.now = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # past the retry delay, not a week
        app.cycle()
        assert transport.sent == ["wendy@example.org"]
    finally:
        app.engine.dispose()


def test_the_deliver_job_fires_on_every_readers_schedule(tmp_path: Path) -> None:
    settings = parse_settings(
        settings_at(tmp_path, f"sqlite:///{tmp_path}/p.db"), source="t.yaml", base=tmp_path
    )
    trigger = delivery_trigger(settings, "UTC")
    fires, last = [], TUESDAY
    for _ in range(4):
        last = trigger.get_next_fire_time(None, last.replace(second=1))  # type: ignore[assignment]
        fires.append(last.astimezone(UTC))
    assert fires == [
        datetime(2026, 12, 1, 12, 0, tzinfo=UTC),  # dora's 07:00 in New York
        datetime(2026, 12, 2, 8, 0, tzinfo=UTC),  # schedule.deliver
        datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 3, 8, 0, tzinfo=UTC),
    ]
    # Monday 07:00 UTC (Wendy's) is among them
    monday = trigger.get_next_fire_time(None, datetime(2026, 12, 7, 6, 59, tzinfo=UTC))
    assert monday is not None and monday.astimezone(UTC) == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "    schedule: fortnightly\n",
            "t.yaml:3: subscribers[0] (x@example.org).schedule: 'fortnightly' is not daily",
        ),
        (
            "    schedule: '0 25 * * *'\n",
            "t.yaml:3: subscribers[0] (x@example.org).schedule: '0 25 * * *' is not",
        ),
        (
            "    timezone: Mars/Olympus\n",
            "t.yaml:3: subscribers[0] (x@example.org).timezone: 'Mars/Olympus' is no IANA",
        ),
    ],
)
def test_a_bad_cadence_is_refused_with_its_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(
            f"subscribers:\n  - email: x@example.org\n{line}    keywords: [x]\n", source="t.yaml", base=None
        )
    assert message in str(err.value)


def test_changing_a_schedule_starts_it_again(tmp_path: Path, database_url: str) -> None:
    """Weekly to default: the reader's next run sends; default to weekly: the next Monday."""
    text = settings_at(tmp_path, database_url)
    clock = Clock(TUESDAY)
    (tmp_path / "inbox").mkdir()
    app = App(parse_settings(text, source="t.yaml", base=tmp_path), clock=clock, progress=False)
    app.prepare_store()
    app.engine.dispose()
    plain = text.replace("    schedule: weekly\n", "")
    app = App(parse_settings(plain, source="t.yaml", base=tmp_path), clock=clock, progress=False)
    try:
        app.prepare_store()
        with store.reading(app.engine) as session:
            wendy = store.subscriber_by_email(session=session, email="wendy@example.org")
        assert wendy is not None and wendy.schedule is None and wendy.next_email_at is None
    finally:
        app.engine.dispose()
