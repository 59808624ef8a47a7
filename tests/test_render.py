"""Rendered email and feed, compared with golden files.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_render.py
"""

import os
from pathlib import Path

import feedparser
import pytest

from service import feeds
from service.render import (
    Digest,
    PaperView,
    Renderer,
    list_id,
    markup,
    message_id,
    paper_link,
    templates_path,
)
from tests.conftest import FIXED_NOW

GOLDEN = Path(__file__).parent / "golden"
SENDER = "paperboy <papers@example.org>"


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PAPERBOY_REGEN_GOLDEN"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs; see the module docstring"


def view(
    title: str, abstract: str, terms: tuple[str, ...], score: int, via: tuple[str, ...] = ("keywords",)
) -> PaperView:
    link = paper_link("https://huggingface.co/papers?q={title}", title=title, key="k")
    return PaperView.build(title=title, abstract=abstract, link=link, terms=terms, score=score, via=via)


DIGEST = Digest(
    to_email="alice@example.org",
    to_name="Alice Müller",
    papers=[
        view(
            'T\\"ULU 3: Pushing Frontiers',
            "We present TÜLU 3 reward models. Code: https://github.com/allenai/open-instruct.",
            ("tulu", "reward model*", "/open-\\w+/"),
            3,
            ("keywords", "topic:llm-safety"),
        ),
        view(
            "<script>alert(1)</script>\r\nBcc: victim@example.org",
            "Instruction-following & more.",
            ("instruction following",),
            1,
        ),
    ],
    more=2,
    feed_url="https://papers.example.org/feeds/u/TOKEN.atom",
    unsubscribe=[
        "https://papers.example.org/unsubscribe/TOKEN",
        "mailto:papers@example.org?subject=unsubscribe%20TOKEN",
    ],
    message_id=message_id(sender=SENDER, token="TOKEN", delivery_ids=[3, 1, 2]),
    date=FIXED_NOW,
)


@pytest.fixture
def message():  # type: ignore[no-untyped-def]
    return Renderer(templates_path()).message(DIGEST, sender=SENDER, list_id=list_id(SENDER)).parse()


def test_email_headers(message) -> None:  # type: ignore[no-untyped-def]
    assert message["Subject"] == '4 new papers for you: T\\"ULU 3: Pushing Frontiers'
    assert message["To"].addresses[0].display_name == "Alice Müller"
    assert message["From"].addresses[0].addr_spec == "papers@example.org"
    assert message["Date"].datetime == FIXED_NOW
    assert message["Message-ID"] == message_id(sender=SENDER, token="TOKEN", delivery_ids=[1, 2, 3])
    assert message["List-Id"] == "paperboy <paperboy.example.org>"
    assert message["List-Unsubscribe"].startswith("<https://papers.example.org/unsubscribe/TOKEN>, <mailto:")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert "Bcc" not in message


def test_email_text_part_is_golden(message) -> None:  # type: ignore[no-untyped-def]
    golden("email.txt", message.get_body(("plain",)).get_content())


def test_email_html_part_is_golden(message) -> None:  # type: ignore[no-untyped-def]
    html = message.get_body(("html",)).get_content()
    golden("email.html", html)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<mark>T\\&#34;ULU</mark>" in html and "<mark>reward models</mark>" in html
    assert '<a href="https://github.com/allenai/open-instruct">' in html  # the trailing dot is not in the URL


def test_markup_links_urls_marks_terms_and_escapes_the_rest() -> None:
    out = markup("See <b> & https://x.org/a_b?c=1&d=2). LLMs rock", ["llm", "x"])
    assert out == (
        'See &lt;b&gt; &amp; <a href="https://x.org/a_b?c=1&amp;d=2">https://x.org/a_b?c=1&amp;d=2</a>). '
        "<mark>LLMs</mark> rock"
    )


def test_feed_is_golden_and_parses_cleanly() -> None:
    items = [
        feeds.FeedItem("tulu 3", "TÜLU 3 <b>bold</b>", "Abstract & more", FIXED_NOW, ("tulu",)),
        feeds.FeedItem("older paper", "Older Paper", "Old abstract", FIXED_NOW.replace(day=1)),
    ]
    spec = feeds.FeedSpec("u/TOKEN", "paperboy: papers for Alice", "Papers matching your keywords")
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
        assert [e.title for e in parsed.entries] == ["TÜLU 3 <b>bold</b>", "Older Paper"]
        assert parsed.entries[0].id == feeds.entry_id("tulu 3")
        assert parsed.entries[0].link == "https://huggingface.co/papers?q=T%C3%9CLU+3+%3Cb%3Ebold%3C%2Fb%3E"
