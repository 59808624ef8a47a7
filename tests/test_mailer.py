"""The sending side in this process: the rate limit (with a fake clock) and the
in-process sender over a maildir."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

import pytest

from service.mailer import InProcessSender, MaildirTransport, Outcomes, SendError, TokenBucket
from service.message import Mail


class FakeTime:
    """A clock that moves only when the bucket sleeps; what it slept is kept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def bucket(self, rate: float) -> TokenBucket:
        return TokenBucket(rate, clock=self.clock, sleep=self.sleep)


async def take(bucket: TokenBucket, messages: int) -> None:
    for _ in range(messages):
        await bucket.take()


@pytest.mark.parametrize(("rate", "messages", "waited"), [(5.0, 11, 2.0), (0.5, 3, 4.0), (100.0, 50, 0.49)])
def test_token_bucket_spaces_messages_at_the_rate(rate: float, messages: int, waited: float) -> None:
    time = FakeTime()
    asyncio.run(take(time.bucket(rate), messages))
    # the first message goes at once, then one every 1/rate seconds (the clock never moved on its own)
    assert sum(time.sleeps) == pytest.approx(waited)


def test_no_rate_means_no_waiting() -> None:
    async def fail(seconds: float) -> None:
        raise AssertionError("slept")

    asyncio.run(take(TokenBucket(None, clock=lambda: 0.0, sleep=fail), 100))


def test_token_bucket_allows_a_burst_after_idle_time() -> None:
    time = FakeTime()

    async def run() -> None:
        bucket = time.bucket(4.0)
        await bucket.take()
        time.now = 10.0  # idle for a long time after sending: the bucket is full (4 tokens, not 40)
        await take(bucket, 6)

    asyncio.run(run())
    assert sum(time.sleeps) == pytest.approx(2 / 4.0)  # 4 at once, the 5th and 6th a quarter second apart


def test_a_bucket_banks_nothing_before_its_first_message() -> None:
    """The time between making the bucket and the first send (sessions connecting, say)
    is no credit: the first message goes at once, every later one waits its turn."""
    time = FakeTime()

    async def run() -> None:
        bucket = time.bucket(20.0)
        time.now = 5.0  # the sessions took long to connect
        await take(bucket, 10)

    asyncio.run(run())
    assert sum(time.sleeps) == pytest.approx(9 / 20.0)


def test_the_in_process_sender_sends_everything_once_over_its_connections(tmp_path: Path) -> None:
    """Three connections share one queue: every email once, and the one None that ends
    the run stops every connection."""
    sent: list[int] = []
    took = []

    async def failed(mail: Mail, exc: SendError) -> None:
        raise AssertionError(exc)

    async def run() -> None:
        queue: asyncio.Queue[Mail | None] = asyncio.Queue()
        for i in range(20):
            queue.put_nowait(
                Mail(f"r{i}@example.org", f"<{i}@x>", f"Subject: {i}\n\n{i}\n".encode(), subscriber_id=i)
            )
        queue.put_nowait(None)
        outcomes = Outcomes(
            took=lambda: took.append(1),
            sent=lambda m: sent.append(m.subscriber_id),
            failed=failed,
            stopped=lambda: False,
        )
        sender = InProcessSender(MaildirTransport(tmp_path / "mail"), connections=3)
        await asyncio.wait_for(sender.run(queue, outcomes), timeout=60)
        assert sender.lost == []

    asyncio.run(run())
    assert sorted(sent) == list(range(20)) and len(took) == 20
    assert len(mailbox.Maildir(tmp_path / "mail", create=False)) == 20
