"""Feeds: what goes into them, compared with a golden file and read back by feedparser.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_feeds.py
"""

import html

import feedparser

from service import feeds
from tests.helpers import FIXED_NOW, golden


def test_feed_is_golden_and_parses_cleanly() -> None:
    items = [
        feeds.FeedItem("tulu 3", "TÜLU 3 <b>bold</b>", "Abstract & more", FIXED_NOW, ("tulu",)),
        feeds.FeedItem("older paper", "Older Paper", "Old abstract", FIXED_NOW.replace(day=1)),
    ]
    spec = feeds.FeedSpec(
        feeds.subscriber_feed("TOKEN"), "paperboy: papers for Alice", "Papers matching your keywords"
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


def test_feed_names_are_the_ones_the_server_serves() -> None:
    for name in (feeds.ALL, feeds.topic_feed("llm-safety"), feeds.subscriber_feed("A" * 24)):
        for kind in feeds.SUFFIXES:
            assert feeds.FEED_FILE.fullmatch(f"{name}.{kind}")
    for path in ("all.xml", "topics/../all.atom", "u/short.atom", "u/" + "A" * 24 + ".atom.bak", "x.atom"):
        assert not feeds.FEED_FILE.fullmatch(path)
