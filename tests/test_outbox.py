"""Pure pieces of the outbox: the retry schedule and the rate limit (with a fake clock)."""

from __future__ import annotations

import asyncio
import random

import pytest

from service.outbox import TokenBucket, retry_delay


def test_retry_delays_double_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, first=60, cap=3600, rng=rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        base = min(3600, 60 * 2 ** (n - 1))
        assert base * 0.5 <= delay < base  # jitter: between half and all of the base delay
    assert max(delays) < 3600


@pytest.mark.parametrize(("rate", "messages", "waited"), [(5.0, 11, 2.0), (0.5, 3, 4.0), (100.0, 50, 0.49)])
def test_token_bucket_spaces_messages_at_the_rate(rate: float, messages: int, waited: float) -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    async def send_all() -> None:
        bucket = TokenBucket(rate, clock=lambda: now[0], sleep=sleep)
        for _ in range(messages):
            await bucket.take()

    asyncio.run(send_all())
    # the first message goes at once, then one every 1/rate seconds (the clock never moved on its own)
    assert sum(sleeps) == pytest.approx(waited)


def test_no_rate_means_no_waiting() -> None:
    async def fail(seconds: float) -> None:
        raise AssertionError("slept")

    async def send_all() -> None:
        bucket = TokenBucket(None, clock=lambda: 0.0, sleep=fail)
        for _ in range(100):
            await bucket.take()

    asyncio.run(send_all())


def test_token_bucket_allows_a_burst_after_idle_time() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    async def run() -> None:
        bucket = TokenBucket(4.0, clock=lambda: now[0], sleep=sleep)
        now[0] = 10.0  # idle for a long time: the bucket is full (4 tokens, not 40)
        for _ in range(6):
            await bucket.take()

    asyncio.run(run())
    assert sum(sleeps) == pytest.approx(2 / 4.0)  # 4 at once, the 5th and 6th a quarter second apart
