"""Markup in titles and abstracts cannot become markup in a feed reader. The hostile digest
of test_hostile goes through `paperboy run --once`; its feeds are read back by feedparser
and, as XML, by ElementTree (what a reader that does not sanitise sees)."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path

import feedparser

from tests.helpers import local_config, run_cli
from tests.test_hostile import HOSTILE

ATOM = "{http://www.w3.org/2005/Atom}"


def test_markup_in_a_paper_reaches_feed_readers_as_text(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "hostile.txt").write_text(HOSTILE)
    config = local_config(tmp_path)
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 0, done.stderr

    rss = ET.parse(tmp_path / "feeds" / "all.rss").getroot()
    items = rss.findall("./channel/item")
    assert len(items) == 2
    for item in items:
        for field in ("title", "description"):
            value = item.findtext(field) or ""
            # what an RSS reader renders as HTML: no tag survives, only escaped text
            assert "<" not in value and ">" not in value, (field, value)
    descriptions = " ".join(item.findtext("description") or "" for item in items)
    assert "&lt;img src=x onerror=alert(1)&gt;" in descriptions
    titles = [html.unescape(item.findtext("title") or "") for item in items]
    assert any(t.startswith("Evil LLMs <script>alert('x')</script>") for t in titles)  # the text, intact

    parsed = feedparser.parse((tmp_path / "feeds" / "all.rss").read_bytes())
    assert not parsed.bozo
    for entry in parsed.entries:
        assert "<script" not in entry.title and "<img" not in entry.summary
    assert any("&lt;img src=x onerror=alert(1)&gt;" in e.summary for e in parsed.entries)

    atom = ET.parse(tmp_path / "feeds" / "all.atom").getroot()  # Atom says type="text": as it was
    summaries = [e.findtext(f"{ATOM}summary") or "" for e in atom.findall(f"{ATOM}entry")]
    assert any("<img src=x onerror=alert(1)>" in s for s in summaries)
    assert all(e.find(f"{ATOM}summary").get("type", "text") == "text" for e in atom.findall(f"{ATOM}entry"))  # type: ignore[union-attr]
