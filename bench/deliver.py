"""Delivery benchmark: paperboy's outbox against raw aiosmtplib, same messages, same sink.

    .venv/bin/python bench/deliver.py [--emails 10000] [--concurrency 4] [--postgres URL]
                                      [--max-papers 10] [--keywords 2]

(needs the test install: it uses aiosmtpd as the sink.)

A sink SMTP server (aiosmtpd's ``Sink`` handler, which accepts and drops
every message) runs in a separate process on 127.0.0.1. A SQLite store is
filled with ``--emails`` subscribers, each with ``--keywords`` keywords matching papers of
the sample digests, so each gets one digest email of at most ``--max-papers`` papers
(``--max-papers 24 --keywords 3``: about 66 KiB an email, the size of
``bench/cycle.py``'s; the default makes 35 KiB). Then, in this one run:

- raw: every subscriber's email is rendered to bytes in advance (untimed),
  and plain aiosmtplib (``sendmail``) pushes those ready messages over
  ``--concurrency`` connections, one shared queue, nothing else. This is the
  ceiling. It runs before paperboy and again after, and paperboy is compared
  with the mean of the two: on a shared machine the speed drifts by a third
  within minutes, and one raw run alone can catch a fast or a slow spell.
- paperboy: the real delivery run (``service.delivery.DeliveryRun``) over the
  same number of connections: claiming rows in the store, rendering each
  email from the templates, sending it, and recording the outcome in the
  store, email by email. Its SMTP sessions run in a child process
  (``service.courier``), started within the timed run; the child's CPU time
  is counted with the client's.

It prints both throughputs and paperboy's share of the raw one (target: at
least 70%), and checks that every delivery ended ``sent``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402

from service import store  # noqa: E402
from service.compose import Composer  # noqa: E402
from service.cycle import App  # noqa: E402
from service.delivery import DeliveryRun  # noqa: E402
from service.message import Mail  # noqa: E402
from service.settings import parse_settings  # noqa: E402
from tests.conftest import scratch_schema  # noqa: E402

KEYWORDS = ["LLM", "language model", "diffusion", "agent", "reward model", "vision", "benchmark", "reasoning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the sink SMTP server did not start")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    """CPU time of this process and of its children that have ended: paperboy's sending
    process (``service.courier``) ends with the run (the sink runs on until the end)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_app(
    folder: Path,
    port: int,
    emails: int,
    concurrency: int,
    rng: random.Random,
    database: str | None = None,
    *,
    max_papers: int = 10,
    keywords: int = 2,
) -> App:
    people = "".join(
        f"  - email: reader{i:05d}@example.org\n"
        f"    keywords: [{', '.join(rng.choice(KEYWORDS) for _ in range(keywords))}]\n"
        for i in range(emails)
    )
    settings = parse_settings(
        f"""\
database: "{database or f"sqlite:///{folder}/bench.db"}"
inbox: {folder}/inbox
inbox_settle: 0s
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, concurrency: {concurrency}, timeout: 30s}}
  max_papers: {max_papers}
feeds:
  dir: {folder}/feeds
subscribers:
{people}""",
        source="bench",
        base=folder,
    )
    (folder / "inbox").mkdir()
    for digest in sorted((ROOT / "tests" / "fixtures").glob("digest-*.txt")):
        (folder / "inbox" / digest.name).write_bytes(digest.read_bytes())
        os.utime(folder / "inbox" / digest.name, (0, 0))
    app = App(settings, progress=False)
    app.prepare_store()
    app.poll_inbox()
    app.match()
    return app


def prebuilt(app: App) -> list[Mail]:
    """Every subscriber's email, composed as the delivery run composes it: claim a chunk,
    compose it, give it back."""
    at = datetime.now(UTC)
    worker, after = "bench-prebuild", 0
    out: list[Mail] = []
    compose = Composer(app.engine, app.renderer, app.settings)
    while True:
        with store.transaction(app.engine) as session:
            claimed, _ = store.claim_due(
                session=session, at=at, lease_until=at, worker=worker, max_subscribers=500, after=after
            )
        if not claimed:
            return out
        after = max(claimed)
        out += compose(claimed, at=at)
        ids = [row.id for rows in claimed.values() for row in rows]
        with store.transaction(app.engine) as session:
            store.release(session=session, delivery_ids=ids, worker=worker)


async def raw_send(mails: list[Mail], port: int, concurrency: int) -> None:
    queue: asyncio.Queue[Mail] = asyncio.Queue()
    for mail in mails:
        queue.put_nowait(mail)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        await client.connect()
        while not queue.empty():
            mail = queue.get_nowait()
            options = ["BODY=8BITMIME"] if mail.eight_bit else None  # as paperboy sends it
            await client.sendmail("papers@example.org", [mail.to], mail.data, mail_options=options)
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure_raw(messages: list[Mail], port: int, concurrency: int, sink_pid: int, label: str) -> float:
    """Push the pre-built messages with plain aiosmtplib; print and return emails/s."""
    t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(sink_pid)
    asyncio.run(raw_send(messages, port, concurrency))
    took, cpu, sink_cpu = time.perf_counter() - t0, time.process_time() - c0, cpu_seconds(sink_pid) - s0
    rate, per_email = len(messages) / took, 1000 / len(messages)
    print(
        f"{label:<9s} {took:.1f} s, {rate:,.0f} emails/s (aiosmtplib pushing pre-built messages;"
        f" CPU per email: client {cpu * per_email:.2f} ms, sink {sink_cpu * per_email:.2f} ms)"
    )
    return rate


@contextmanager
def scratch_database(server: str | None) -> Iterator[str | None]:
    """None (a SQLite file in the temporary folder), or a fresh schema on ``server``."""
    if server is None:
        yield None
        return
    with scratch_schema(server, prefix="bench_") as url:
        yield url


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--emails", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--postgres",
        metavar="URL",
        help="use this PostgreSQL server (a fresh schema, dropped afterwards) instead of a SQLite file,"
        " e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )
    p.add_argument("--max-papers", type=int, default=10, help="papers an email shows at most (default 10)")
    p.add_argument("--keywords", type=int, default=2, help="keywords of each subscriber (default 2)")
    args = p.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp, scratch_database(args.postgres) as database:
            app = build_app(
                Path(tmp),
                port,
                args.emails,
                args.concurrency,
                random.Random(args.seed),
                database,
                max_papers=args.max_papers,
                keywords=args.keywords,
            )
            messages = prebuilt(app)
            size = sum(len(m.data) for m in messages) / len(messages)
            cpu = platform.processor() or platform.machine()
            python = f"Python {platform.python_version()}, {platform.system()}"
            print(f"machine:  {cpu}, {os.cpu_count()} cores, {python}")
            print(f"store:    {'PostgreSQL' if args.postgres else 'SQLite'}")
            print(
                f"workload: {len(messages):,} digest emails (average {size / 1024:.1f} KiB)"
                f" to an aiosmtpd Sink in another process, {args.concurrency} connections"
            )

            raw_rates = [measure_raw(messages, port, args.concurrency, sink.pid, "raw:")]
            t0, c0, s0 = time.perf_counter(), client_cpu(), cpu_seconds(sink.pid)
            report = DeliveryRun(
                engine=app.engine,
                sender=app.sender,
                renderer=app.renderer,
                settings=app.settings,
                clock=lambda: datetime.now(UTC),
            ).run()
            ours, our_cpu = time.perf_counter() - t0, client_cpu() - c0
            our_sink = cpu_seconds(sink.pid) - s0
            our_rate = report.emails / ours
            per_email = 1000 / max(1, report.emails)
            print(
                f"paperboy: {ours:.1f} s, {our_rate:,.0f} emails/s (claim, render, send, record each outcome;"
                f" CPU per email: client {our_cpu * per_email:.2f} ms, sink {our_sink * per_email:.2f} ms)"
            )
            with store.reading(app.engine) as session:
                counts = store.counts(session=session)["deliveries"]
            raw_rates.append(measure_raw(messages, port, args.concurrency, sink.pid, "raw again:"))
            raw_rate = sum(raw_rates) / len(raw_rates)
            share = our_rate / raw_rate
            print(
                f"share:    {share:.0%} of raw (the mean of the runs before and after,"
                f" {raw_rate:,.0f} emails/s; target: at least 70%); deliveries {counts}"
            )
            ok = report.emails == len(messages) and counts["sent"] == sum(counts.values()) and share >= 0.7
            print(f"target:   {'yes' if ok else 'NO'}")
            app.engine.dispose()
            return 0 if ok else 1
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
