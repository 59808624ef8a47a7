"""Feeds: what a render costs against the lxml floor, and how fast `paperboy serve` answers.

    .venv/bin/python bench/feeds.py [--entries 200] [--subscribers 10000] [--papers 300]
                                    [--concurrency 8] [--postgres URL]

1. Render: one feed of ``--entries`` papers (recombined from the sample
   digests), Atom and RSS, as paperboy renders it (feedgen: the feed without
   entries, and each paper's entry made once for every feed it is in), against
   the floor: the same two documents built directly with lxml (the library
   feedgen itself builds on). Median of 30 renders each: paperboy with no
   entry made yet (new papers) and with every entry made before (the next
   reader of the same papers), feedgen writing the whole feed in one piece,
   and the floor.
2. Serve: a store with ``--subscribers`` personal feeds (the workload of
   ``bench/cycle.py``: ``paperboy ingest`` of ``--papers`` papers, then the
   feeds published: marks in the store, files in the mirror), served by a
   ``paperboy serve`` process that shares the store but not the folder. A
   real HTTP client (httpx, ``--concurrency`` connections) fetches every
   personal feed once (200s: each rendered from the store on request), then
   again with the ETag it got, as a feed reader polling every 15 minutes does
   (304s: one query by key), then once more without a validator (200s from
   the server's cache of what it rendered). Requests per second, latency
   percentiles, and the server's CPU per request (from /proc).
   10,000 readers polling every 15 minutes ask 11 requests a second.

The client runs on the same machine as the server: on 2 cores they share it,
so the figures are a floor of what the server alone can answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

import feedparser
import httpx
from lxml import etree
from sqlalchemy import text as text_sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cycle import write_config, write_digest  # noqa: E402  (bench/cycle.py's workload)
from match import corpus, make_papers, vocabulary  # noqa: E402

from service import feeds  # noqa: E402
from tests.helpers import scratch_schema  # noqa: E402

ATOM = "http://www.w3.org/2005/Atom"
BASE = "https://papers.example.org/feeds/"
LINK = "https://huggingface.co/papers?q={title}"


def lxml_floor(spec: feeds.FeedSpec, items: Sequence[feeds.FeedItem]) -> dict[str, bytes]:
    """The same Atom and RSS documents as :func:`service.feeds.render`, built directly with lxml."""
    newest = max(i.published for i in items)

    def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        element = etree.SubElement(parent, tag, **attrs)
        if text is not None:
            element.text = text
        return element

    a = f"{{{ATOM}}}"
    feed = etree.Element(a + "feed", nsmap={None: ATOM})
    sub(feed, a + "id", feeds.entry_id("feed:" + spec.name))
    sub(feed, a + "title", spec.title)
    sub(feed, a + "updated", newest.isoformat())
    sub(sub(feed, a + "author"), a + "name", "paperboy")
    sub(feed, a + "link", href=BASE, rel="alternate")
    sub(feed, a + "link", href=BASE + spec.name + ".atom", rel="self")
    sub(feed, a + "generator", "paperboy")
    sub(feed, a + "subtitle", spec.subtitle)
    for item in items:
        entry = sub(feed, a + "entry")
        sub(entry, a + "id", feeds.entry_id(item.key))
        sub(entry, a + "title", item.title)
        sub(entry, a + "updated", item.published.isoformat())
        sub(entry, a + "link", href=feeds.paper_link(LINK, title=item.title, key=item.key))
        sub(entry, a + "summary", item.abstract)
        for term in item.terms:
            sub(entry, a + "category", term=term)
        sub(entry, a + "published", item.published.isoformat())
    rss = etree.Element("rss", version="2.0")
    channel = sub(rss, "channel")
    sub(channel, "title", escape(spec.title))
    sub(channel, "link", BASE)
    sub(channel, "description", escape(spec.subtitle))
    sub(channel, "generator", "paperboy")
    sub(channel, "language", "en")
    sub(channel, "lastBuildDate", format_datetime(newest))
    for item in items:
        entry = sub(channel, "item")
        sub(entry, "title", escape(item.title))
        sub(entry, "link", feeds.paper_link(LINK, title=item.title, key=item.key))
        sub(entry, "description", escape(item.abstract))
        sub(entry, "guid", feeds.entry_id(item.key), isPermaLink="false")
        for term in item.terms:
            sub(entry, "category", term)
        sub(entry, "pubDate", format_datetime(item.published))
    return {
        ".atom": etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True),
        ".rss": etree.tostring(rss, xml_declaration=True, encoding="UTF-8", pretty_print=True),
    }


def median_ms(fn: object, rounds: int = 30) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def render_floor(entries: int, seed: int) -> None:
    papers = make_papers(corpus(), entries, random.Random(seed))
    start = datetime(2026, 3, 14, tzinfo=UTC)
    items = [
        feeds.FeedItem(f"key {i}", title, abstract, start - timedelta(minutes=i), ("reward model", "rlhf"))
        for i, (title, abstract) in enumerate(papers)
    ]
    spec = feeds.FeedSpec(feeds.subscriber_feed("A" * 24), "paperboy: papers for Alice", "Papers for you")
    made = feeds.render(spec, items, base_url=BASE, link_template=LINK)
    floor = lxml_floor(spec, items)
    for suffix in (".atom", ".rss"):  # the floor builds the same feed: same entries, same texts
        ours, theirs = feedparser.parse(made[suffix]), feedparser.parse(floor[suffix])
        assert not ours.bozo and not theirs.bozo
        assert [(e.id, e.title, e.summary) for e in ours.entries] == [
            (e.id, e.title, e.summary) for e in theirs.entries
        ]

    def cold() -> None:  # no paper's entry made yet: a feed of papers no feed has shown
        feeds.clear_entries()
        feeds.render(spec, items, base_url=BASE, link_template=LINK)

    def whole() -> None:  # feedgen writing the whole feed in one piece
        for suffix in (".atom", ".rss"):
            feeds.render_whole(spec, items, base_url=BASE, link_template=LINK, suffix=suffix)

    cold_ms = median_ms(cold)
    warm_ms = median_ms(lambda: feeds.render(spec, items, base_url=BASE, link_template=LINK))
    whole_ms = median_ms(whole)
    floor_ms = median_ms(lambda: lxml_floor(spec, items))
    size = sum(len(b) for b in made.values()) / 1024
    print(f"\nrender: one feed of {entries} entries, Atom + RSS ({size:,.0f} KB), median of 30")
    print(f"  paperboy, new papers      {cold_ms:7.2f} ms   {cold_ms / floor_ms:5.2f}x (target: 2x)")
    print(f"  paperboy, papers shown    {warm_ms:7.2f} ms   {warm_ms / floor_ms:5.2f}x (entries made before)")
    print(f"  feedgen, whole feed       {whole_ms:7.2f} ms   {whole_ms / floor_ms:5.2f}x")
    print(f"  lxml directly (floor)     {floor_ms:7.2f} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fetch_all(
    base: str, paths: list[str], concurrency: int, etags: dict[str, str] | None
) -> tuple[float, list[float], dict[int, int], dict[str, str]]:
    """GET every path (with If-None-Match when ``etags`` has one); wall seconds, latencies,
    statuses, and the ETags answered."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answered: dict[str, str] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def worker() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                headers = {"If-None-Match": etags[path]} if etags and path in etags else {}
                t0 = time.perf_counter()
                r = await http.get(path, headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                answered[path] = r.headers.get("etag", "")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, statuses, answered


def serve_figures(args: argparse.Namespace) -> int:
    if not args.postgres:
        return serve_from(args, None)
    with scratch_schema(args.postgres, prefix="bench_") as url:
        return serve_from(args, url)


def serve_from(args: argparse.Namespace, database: str | None) -> int:
    from service.cycle import App
    from service.settings import load_settings

    folder = Path(tempfile.mkdtemp(prefix="paperboy-feeds-"))
    try:
        rng = random.Random(args.seed)
        config = write_config(folder, args.subscribers, rng, vocabulary(corpus()))
        port = free_port()
        text = config.read_text().replace("http: {enabled: false}", f"http: {{port: {port}}}")
        if database:
            text = text.replace(f"database: sqlite:///{folder}/paperboy.db", f'database: "{database}"')
        config.write_text(text)
        digest = folder / "digest.txt"
        write_digest(digest, make_papers(corpus(), args.papers, random.Random(args.seed)))
        (folder / "inbox").mkdir()
        command = [sys.executable, "-m", "service", "--config", str(config), "-q"]
        subprocess.run([*command, "ingest", str(digest)], check=True, capture_output=True)
        app = App(load_settings(config), progress=False)
        t0 = time.perf_counter()
        app.write_feeds()
        rendered = time.perf_counter() - t0
        with app.engine.connect() as conn:
            paths = [f"/feeds/u/{t}.atom" for (t,) in conn.execute(text_sql("SELECT token FROM subscribers"))]
        app.engine.dispose()
        store = "PostgreSQL" if database else "SQLite"
        print(
            f"\nserve: {len(paths):,} personal feeds ({args.papers} papers, {store}); "
            f"publishing them all (marks, mirror) took {rendered:.1f} s"
        )
        shutil.rmtree(folder / "feeds")  # the server has no files: it serves from the store
        server = subprocess.Popen([*command, "serve"], cwd=ROOT, stderr=subprocess.PIPE)
        try:
            _wait_listening(port)
            base = f"http://127.0.0.1:{port}"
            before = cpu_seconds(server.pid)
            wall, lat, statuses, etags = asyncio.run(fetch_all(base, paths, args.concurrency, None))
            _report("GET, no validator (200)", wall, lat, statuses, cpu_seconds(server.pid) - before)
            before = cpu_seconds(server.pid)
            wall, lat, statuses, _ = asyncio.run(fetch_all(base, paths, args.concurrency, etags))
            _report("conditional GET (304)", wall, lat, statuses, cpu_seconds(server.pid) - before)
            ok = statuses == {304: len(paths)}
            before = cpu_seconds(server.pid)
            wall, lat, statuses, _ = asyncio.run(fetch_all(base, paths, args.concurrency, None))
            _report("GET again (200, kept)", wall, lat, statuses, cpu_seconds(server.pid) - before)
        finally:
            server.terminate()
            server.wait(timeout=30)
        return 0 if ok else 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/feeds/all.atom", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"paperboy serve did not answer on port {port}")


def _report(name: str, wall: float, lat: list[float], statuses: dict[int, int], cpu: float) -> None:
    lat = sorted(lat)
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(
        f"  {name:<26} {len(lat) / wall:7.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
        f"server cpu {cpu / len(lat) * 1000:5.2f} ms/req   {statuses}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", help="a PostgreSQL URL to use as the store (its tables are reset)")
    args = parser.parse_args()
    print(f"machine:  {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    render_floor(args.entries, args.seed)
    return serve_figures(args)


if __name__ == "__main__":
    sys.exit(main())
