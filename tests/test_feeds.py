"""Feeds: what goes into them, compared with a golden file and read back by feedparser.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_feeds.py
"""

import html

import feedparser
import pytest

from service import feeds, publish
from tests.helpers import FIXED_NOW, golden


def test_feed_is_golden_and_parses_cleanly() -> None:
    items = [
        feeds.FeedItem(
            "tulu 3", "TÜLU 3 <b>bold</b>", "Abstract & more", FIXED_NOW, ("tulu", '"tulu 3"', "tül*")
        ),
        feeds.FeedItem("older paper", "Older Paper", "Old abstract", FIXED_NOW.replace(day=1)),
    ]
    spec = feeds.FeedSpec(
        feeds.subscriber_feed("TOKEN"),
        "paperboy: papers for Alice",
        "Papers that mention tulu, tulu 3 or tül….",
        page="https://papers.example.org/u/TOKEN",
    )
    files = feeds.render(
        spec,
        items,
        base_url="https://papers.example.org/feeds/",
        link_template="https://huggingface.co/papers?q={title}",
    )
    golden("feed.atom", files[".atom"].decode())
    for suffix, version in ((".atom", "atom10"), (".rss", "rss20")):
        parsed = feedparser.parse(files[suffix])
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.version == version
        # Atom titles are text; RSS ones are HTML for readers, so the markup arrives escaped
        as_text = (lambda t: t) if suffix == ".atom" else html.unescape
        assert [as_text(e.title) for e in parsed.entries] == ["TÜLU 3 <b>bold</b>", "Older Paper"]
        assert parsed.entries[0].id == feeds.entry_id("tulu 3")
        assert parsed.entries[0].link == "https://huggingface.co/papers?q=T%C3%9CLU+3+%3Cb%3Ebold%3C%2Fb%3E"


def test_a_feed_put_together_from_entries_made_once_is_feedgens_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """:func:`feeds.render` makes each paper's entry once for every feed it is in and adds
    the reader's terms: the same bytes as feedgen writing the whole feed, whatever the text
    (markup, quotes, ampersands, letters outside ASCII, a term that reads with an ellipsis)
    and whether the feed has no entry, one, or the same paper again with other terms."""
    base, link = "https://papers.example.org/feeds/", "https://huggingface.co/papers?q={title}"
    paper = ("a & b", 'Quotes "and" <i>tags</i> & TÜLU', "x < y > z & 'q' \u2014 ünïcode")
    items = [
        feeds.FeedItem(*paper, FIXED_NOW, ('"a & b"', "tül*", "title:x", "/re+gex/")),
        feeds.FeedItem(*paper, FIXED_NOW, ()),  # the same paper, no terms: the cached entry
        feeds.FeedItem(*paper, FIXED_NOW, ("<b>", 'say "hi"')),  # ...and other ones
        feeds.FeedItem("plain", "Plain", "Plain abstract", FIXED_NOW.replace(day=1), ("plain",)),
    ]
    spec = feeds.FeedSpec(feeds.subscriber_feed("T" * 20), "Feed & <title>", "Sub \u2014 title", "")

    def same(entries: list[feeds.FeedItem]) -> None:
        files = feeds.render(spec, entries, base_url=base, link_template=link)
        for suffix in (".atom", ".rss"):
            whole = feeds.render_whole(spec, entries, base_url=base, link_template=link, suffix=suffix)
            assert files[suffix] == whole
            assert files[suffix].count(b"<entry>" if suffix == ".atom" else b"<item>") == len(entries)

    feeds.clear_entries()
    for entries in ([], items[:1], items, items[::-1]):  # none made yet, some, all
        same(entries)
    monkeypatch.setattr(feeds, "_KEEP", 1)  # entries pushed out as soon as made: each made again alone
    feeds.clear_entries()
    same(items)


def test_feed_names_are_the_ones_the_server_serves() -> None:
    for name in (feeds.ALL, feeds.topic_feed("llm-safety"), feeds.subscriber_feed("A" * 24)):
        for kind in feeds.SUFFIXES:
            assert feeds.FEED_FILE.fullmatch(f"{name}.{kind}")
    for path in ("all.xml", "topics/../all.atom", "u/short.atom", "u/" + "A" * 24 + ".atom.bak", "x.atom"):
        assert not feeds.FEED_FILE.fullmatch(path)


def test_a_quiet_poll_renders_no_feed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Nothing a feed shows changed: no feed is rendered (the stamp beside the feeds says so);
    a new paper, a forgotten one, or a new feed title renders them again."""
    import shutil
    from datetime import UTC, datetime

    from service import store
    from service.cycle import App
    from service.settings import parse_settings
    from tests.helpers import FIXTURES

    def settings_with(title: str):  # type: ignore[no-untyped-def]
        return parse_settings(
            f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
email: {{maildir: {tmp_path}/mail}}
feeds: {{dir: {tmp_path}/feeds, title: {title}}}
subscribers:
  - email: alice@example.org
    keywords: [model]
""",
            source="t.yaml",
            base=tmp_path,
        )

    (tmp_path / "inbox").mkdir()
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app = App(settings_with("Desk"), progress=False)
    try:
        app.cycle(send=False)
        assert (tmp_path / "feeds" / publish.STAMP).is_file()
        rendered: list[str] = []
        real = feeds.render
        monkeypatch.setattr(
            feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
        )
        assert app.cycle(send=False).feeds_changed == 0 and rendered == []  # quiet: nothing rendered

        with store.transaction(app.engine) as session:
            store.forget_papers(session=session, paper_ids=[1], at=datetime.now(UTC))
        assert app.write_feeds() > 0 and feeds.ALL in rendered
        rendered.clear()
        assert app.write_feeds() == 0 and rendered == []

        shutil.copy(FIXTURES / "digest-c.txt", tmp_path / "inbox")  # new papers
        assert app.cycle(send=False).feeds_changed > 0
        rendered.clear()
        renamed = App(settings_with("Paper Desk"), engine=app.engine, progress=False)
        assert renamed.write_feeds() > 0 and rendered  # the title is in every feed
    finally:
        app.engine.dispose()


def test_the_mirror_replaces_files_only_when_the_batch_is_on_disk(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Until a batch is committed, readers of the folder see the old files (the new ones wait
    in temporary files beside them); a batch that breaks off leaves the old files and no
    temporary file; a file whose bytes did not change is not written again."""
    import os
    import sys

    if sys.platform == "linux":  # the folder's file system is flushed (syncfs), not every disk
        monkeypatch.setattr(os, "sync", lambda: pytest.fail("sync(2) flushes every disk of the host"))
    spec = feeds.FeedSpec(feeds.subscriber_feed("T" * 20), "t", "s")
    old = {".atom": b"old atom", ".rss": b"old rss"}
    mirror = feeds.Mirror(tmp_path)
    assert mirror.stage(spec, old) == 2
    mirror.commit()
    target = tmp_path / "u" / ("T" * 20)
    assert target.with_suffix(".atom").read_bytes() == b"old atom"

    assert mirror.stage(spec, {".atom": b"new atom", ".rss": b"old rss"}) == 1  # the RSS is the same
    assert target.with_suffix(".atom").read_bytes() == b"old atom"  # not yet
    assert len(list(target.parent.glob(".*.tmp"))) == 1
    mirror.commit()
    assert target.with_suffix(".atom").read_bytes() == b"new atom"
    assert not list(target.parent.glob(".*.tmp"))

    assert mirror.stage(spec, {".atom": b"newer atom", ".rss": b"newer rss"}) == 2  # sizes differ: not read
    mirror.abort()
    assert target.with_suffix(".atom").read_bytes() == b"new atom"
    assert target.with_suffix(".rss").read_bytes() == b"old rss"
    assert not list(target.parent.glob(".*.tmp"))
