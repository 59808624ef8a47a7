"""Feeds as readers and validators see them (issue 17): each entry dated by its digest,
the digest's ranking kept as distinct times; categories as readable words; titles and
subtitles that say what the feed holds; the alternate link a human page. Read back by
feedparser and by a second, stricter parser (atoma)."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import atoma
import feedparser

from service import store
from service.cycle import App
from service.settings import parse_settings
from tests.helpers import FIXTURES

JAN_5 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()
MAR_15 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC).timestamp()  # "Mar 14" is placed in 2026


def served_feeds(tmp_path: Path) -> tuple[App, dict[str, str]]:
    settings = parse_settings(
        f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
email: {{maildir: {tmp_path}/mail}}
feeds: {{dir: {tmp_path}/feeds, title: Paper Desk}}
http: {{public_url: "https://papers.example.org/"}}
topics:
  vision: {{keywords: [segment*, "semantic segmentation"]}}
subscribers:
  - email: alice@example.org
    name: Alice
    keywords: ['"language model"', segment*, /diffus(ion|er)/]
    exclude: [medical]
  - email: bob@example.org
    query: 'title:"language model" AND NOT survey'
""",
        source="t.yaml",
        base=tmp_path,
    )
    (tmp_path / "inbox").mkdir()
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")  # "Mar 14"
    os.utime(tmp_path / "inbox" / "digest-a.txt", (MAR_15, MAR_15))
    shutil.copy(FIXTURES / "digest-b.txt", tmp_path / "inbox")  # no date line: the file's day
    os.utime(tmp_path / "inbox" / "digest-b.txt", (JAN_5, JAN_5))
    app = App(settings, progress=False)
    app.cycle(send=False)
    with store.reading(app.engine) as session:
        tokens = {s.email: s.token for s in store.active_subscribers(session=session).values()}
    return app, tokens


def test_entries_are_dated_by_their_digest_in_its_order(tmp_path: Path) -> None:
    app, _ = served_feeds(tmp_path)
    try:
        parsed = feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes())
        with store.reading(app.engine) as session:
            papers = {p.title: p for p in store.latest_papers(session=session, limit=1000)}
    finally:
        app.engine.dispose()
    assert not parsed.bozo
    by_day: dict[date, list[tuple[int, datetime]]] = {}
    for entry in parsed.entries:
        published = datetime(*entry.published_parsed[:6], tzinfo=UTC)
        paper = papers[entry.title]
        by_day.setdefault(published.date(), []).append((paper.line, published))
        assert entry.updated == entry.published
    assert set(by_day) == {date(2026, 3, 14), date(2026, 1, 5)}  # the date line; the file's day
    for day, rows in by_day.items():
        rows.sort()  # by line in the digest: the first paper is the latest of its day
        times = [t for _, t in rows]
        assert times == sorted(times, reverse=True) and len(set(times)) == len(times), day


def test_feeds_say_what_they_hold_in_words(tmp_path: Path) -> None:
    app, tokens = served_feeds(tmp_path)
    app.engine.dispose()
    alice = tokens["alice@example.org"]
    atom = feedparser.parse((tmp_path / "feeds" / "u" / f"{alice}.atom").read_bytes())
    assert atom.feed.title == "Paper Desk: papers for Alice"
    assert atom.feed.subtitle == (
        "Papers that mention language model or segment…. Never a paper that mentions medical."
    )
    alternate = [link.href for link in atom.feed.links if link.rel == "alternate"]
    assert alternate == [f"https://papers.example.org/u/{alice}"]  # the reader's page, not the XML
    categories = {t.term for e in atom.entries for t in e.get("tags", [])}
    assert categories and categories <= {"language model", "segment…"}  # no quotes, no *, no regex

    rss = feedparser.parse((tmp_path / "feeds" / "u" / f"{alice}.rss").read_bytes())
    assert rss.feed.link == f"https://papers.example.org/u/{alice}"
    bob = feedparser.parse((tmp_path / "feeds" / "u" / f"{tokens['bob@example.org']}.atom").read_bytes())
    assert bob.feed.title == "Paper Desk: papers for you"
    assert bob.feed.subtitle == 'Papers matching the query title:"language model" AND NOT survey.'

    vision = feedparser.parse((tmp_path / "feeds" / "topics" / "vision.atom").read_bytes())
    assert vision.feed.subtitle == "Papers that mention segment… or semantic segmentation."
    assert [link.href for link in vision.feed.links if link.rel == "alternate"] == [
        "https://papers.example.org/topics/vision"
    ]
    everything = feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes())
    assert everything.feed.title == "Paper Desk: every paper"
    assert everything.feed.link == "https://papers.example.org/"


def test_a_second_parser_reads_every_feed(tmp_path: Path) -> None:
    """atoma builds typed objects and refuses what the specs do not allow (a missing id,
    title or date, a bad date format)."""
    app, _ = served_feeds(tmp_path)
    app.engine.dispose()
    files = sorted((tmp_path / "feeds").rglob("*.atom")) + sorted((tmp_path / "feeds").rglob("*.rss"))
    assert len(files) == 2 * (1 + 1 + 2)
    for path in files:
        if path.suffix == ".atom":
            feed = atoma.parse_atom_bytes(path.read_bytes())
            assert feed.title is not None and feed.updated is not None
            for entry in feed.entries:
                assert entry.id_ and entry.published and entry.updated and entry.summary is not None
        else:
            channel = atoma.parse_rss_bytes(path.read_bytes())
            assert channel.link and channel.description
            for item in channel.items:
                assert item.guid and item.pub_date and item.description is not None
