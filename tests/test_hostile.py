"""Hostile input: a fuzzed digest parser, and titles that try to break headers or HTML,
sent through a real SMTP server and read back with Python's email parser."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from service.digest import DigestError, DigestFile, parse
from tests.helpers import Sink, run_cli, write_config

MTIME = datetime(2026, 3, 15, tzinfo=UTC)

# Pieces a digest is made of, and pieces that damage one.
FRAGMENTS = [
    "Mar 14\n",
    "Daily Papers\n",
    "A Title About LLMs\n",
    'T\\"ULU 3: Pushing Frontiers\n',
    "We study " + "language models " * 30 + "in depth.\n",
    "\n",
    "\n\n\n",
    "\r\n",
    "\ufeff",
    "\x00\x01\x02",
    "   \t  \n",
    "·" * 50 + "\n",
    "Submitted by someone\n",
    "x" * 5000,
    "\u202e\u200b",
]


@st.composite
def digests(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(FRAGMENTS), max_size=30))
    data = "".join(parts).encode("utf-8")
    if draw(st.booleans()):  # damage it: random bytes somewhere, maybe not UTF-8 at all
        noise = draw(st.binary(max_size=64))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + noise + data[at:]
    return data


def check(data: bytes) -> None:
    digest = DigestFile("fuzz.txt")
    try:
        entries = list(parse(io.BytesIO(data), digest, mtime=MTIME))
    except DigestError:
        return  # the parser's own error, naming the file: the only one allowed out
    lines = data.count(b"\n") + 1
    for entry in entries:
        assert entry.title.strip() and entry.abstract.strip()
        assert "\n" not in entry.title and "\r" not in entry.title
        assert 1 <= entry.line <= lines
    for problem in digest.problems:
        assert problem.line is None or 1 <= problem.line <= lines
        assert str(problem).startswith("fuzz.txt")


@settings(max_examples=300, deadline=None)
@given(digests())
def test_the_parser_survives_damaged_digests(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_the_parser_survives_arbitrary_bytes(data: bytes) -> None:
    check(data)


HOSTILE = (
    """\
Mar 14

Daily Papers

Evil LLMs <script>alert('x')</script>\r
Bcc: victim@example.org\r
Subject: you won

A title with a CR\rinside and ünïcödé — “quotes” and emoji 🚀 about LLMs. """
    + "Padding it out. " * 20  # an abstract of several sentences, as a digest's are
    + """

Plain Paper About LLMs

An abstract about LLMs with <img src=x onerror=alert(1)> and \r\nX-Injected: yes in it. """
    + "More of it. " * 30
    + "\n"
)


def test_hostile_titles_cannot_inject_headers_or_html(tmp_path: Path, smtp_server: tuple[Sink, int]) -> None:
    sink, port = smtp_server
    (tmp_path / "inbox").mkdir()
    digest = tmp_path / "inbox" / "hostile.txt"
    digest.write_bytes(HOSTILE.encode())
    old = time.time() - 3600
    os.utime(digest, (old, old))
    config = write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: sqlite:///{tmp_path}/db.sqlite
inbox: {tmp_path}/inbox
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}}}
feeds:
  dir: {tmp_path}/feeds
subscribers:
  - email: reader@example.org
    keywords: [LLM]
""",
    )
    result = run_cli("--config", config, "run", "--once")
    assert result.returncode == 0, result.stderr

    [msg] = sink.messages
    [(_, rcpts)] = sink.envelopes
    assert rcpts == ["reader@example.org"]  # nobody was added to the envelope
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert len(msg.get_all("Subject")) == 1
    subject = str(msg["Subject"])
    assert "\n" not in subject and "\r" not in subject
    assert subject.startswith("2 new papers for you: Evil LLMs <script>")  # the hostile title, on one line
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
    text = msg.get_body(("plain",)).get_content()
    assert "ünïcödé" in text and "🚀" in text  # non-ASCII survives, encoded properly
    for part in msg.walk():
        assert "X-Injected" not in part
