"""Rendered email and feed, compared with golden files.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_render.py
"""

import dataclasses
import os
import string
from pathlib import Path

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import feeds
from service.render import (
    MAX_LINE,
    Digest,
    PaperView,
    Renderer,
    list_id,
    markup,
    message_id,
    one_line,
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


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n\n", 1)[0].split(b"\n")


def test_list_unsubscribe_urls_are_never_encoded_or_broken() -> None:
    """A receiving server reads List-Unsubscribe as it is: each URL whole between < and >,
    never an RFC 2047 encoded word (the email package encoded a long mailto: URL that way)."""
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_"
    urls = [
        f"https://papers.example.org/unsubscribe/{token}",
        f"mailto:papers@example.org?subject=unsubscribe%20{token}",
    ]
    digest = dataclasses.replace(DIGEST, unsubscribe=urls)
    data = Renderer(templates_path()).message(digest, sender=SENDER, list_id=list_id(SENDER)).data
    lines = head_lines(data)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"List-Unsubscribe:"))
    raw = lines[start] + b"".join(line for line in lines[start + 1 :] if line.startswith(b" ")).replace(
        b"\n", b""
    )
    assert b"=?" not in raw
    assert raw == f"List-Unsubscribe: <{urls[0]}>, <{urls[1]}>".encode()
    assert lines[start].endswith(b",") and lines[start + 1] == f" <{urls[1]}>".encode()  # folded between URLs


TEXT = st.one_of(  # any text, and plain ASCII words (the headers written without the email package)
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200),
    st.lists(
        st.text(st.sampled_from(string.ascii_letters + "-:=?"), min_size=1, max_size=12), max_size=20
    ).map(" ".join),
)
NAMES = st.text(st.characters(max_codepoint=0x17F, exclude_categories=("Cs",)), max_size=30)
RENDERER = Renderer(templates_path())


@settings(max_examples=150, deadline=None)
@given(title=TEXT, name=NAMES, local=st.sampled_from(["alice", "a.b+c", "bøb", "x" * 60]))
def test_headers_read_back_as_written(title: str, name: str, local: str) -> None:
    """Whatever the title and the reader's name, the headers parse back to them, no other
    header appears, and lines stay within 78 characters unless one word is longer."""
    digest = dataclasses.replace(
        DIGEST, papers=[view(title or "t", "a", ("a",), 1)], to_name=name, to_email=f"{local}@example.org"
    )
    mail = RENDERER.message(digest, sender=SENDER, list_id=list_id(SENDER))
    msg = mail.parse()
    utf8_address = {"To"} if not local.isascii() else set()  # (the parser calls raw UTF-8 a defect)
    assert msg.defects == [] and all(msg[h].defects == () for h in set(msg.keys()) - utf8_address)
    expected_names = [
        "From",
        "Date",
        "List-Id",
        "Auto-Submitted",
        "Precedence",
        "MIME-Version",
        "Subject",
        "To",
    ]
    expected_names += ["Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type"]
    assert msg.keys() == expected_names
    shown = digest.papers[0].title
    subject = one_line(f"{len(digest.papers) + digest.more} new papers for you: {shown}")
    assert str(msg["Subject"]) == subject or (len(shown) > 70 and str(msg["Subject"]).endswith("..."))
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == (one_line(name), f"{local}@example.org")
    for line in head_lines(mail.data):
        text = line.decode("utf-8")
        assert len(line) <= 998
        if len(text) > MAX_LINE:  # one word too long to break (after the header's name)
            word = text.strip() if text.startswith(" ") else text.partition(": ")[2]
            assert " " not in word.removesuffix(","), text


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
