"""What the templates make of a digest: the text and HTML parts (golden files), terms
marked up, links made, lines kept short.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_render.py
"""

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.render import Renderer, templates_path
from service.views import markup, short_lines
from tests.helpers import golden
from tests.oracle import DIGEST, rendered

HTML_TEXT = st.characters(blacklist_categories=["Cs", "Zs", "Cc"], blacklist_characters="<>")


@pytest.fixture
def message():  # type: ignore[no-untyped-def]
    return rendered().parse()


def test_email_text_part_is_golden(message) -> None:  # type: ignore[no-untyped-def]
    golden("email.txt", message.get_body(("plain",)).get_content())


def test_email_html_part_is_golden(message) -> None:  # type: ignore[no-untyped-def]
    html = message.get_body(("html",)).get_content()
    golden("email.html", html)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert re.search(r'<mark style="[^"]+">TÜLU</mark>', html)  # T\"ULU: the LaTeX accent, as a letter
    assert re.search(r'<mark style="[^"]+">reward models</mark>', html)
    assert (
        '<a href="https://github.com/allenai/open-instruct" style=' in html
    )  # the trailing dot is not in the URL


def test_markup_links_urls_marks_terms_and_escapes_the_rest() -> None:
    out = markup("See <b> & https://x.org/a_b?c=1&d=2). LLMs rock", ["llm", "x"])
    assert out == (
        'See &lt;b&gt; &amp; <a href="https://x.org/a_b?c=1&amp;d=2">https://x.org/a_b?c=1&amp;d=2</a>). '
        "<mark>LLMs</mark> rock"
    )


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.text(HTML_TEXT, max_size=90), max_size=60))
def test_short_lines_only_turns_spaces_into_line_breaks(words: list[str]) -> None:
    """(On escaped HTML text: no angle brackets outside tags.)"""
    text = " ".join(words)
    wrapped = short_lines(text, width=40)
    assert wrapped.replace("\n", " ") == text
    for line in wrapped.split("\n"):
        assert len(line) <= 40 or " " not in line  # longer only when one word is


def test_short_lines_never_breaks_inside_a_tag() -> None:
    html = str(markup("See https://github.com/org/repo for code", []))
    wrapped = short_lines(html, width=10)
    assert '<a href="https://github.com/org/repo">' in wrapped
    assert wrapped.replace("\n", " ") == html


def test_compiled_templates_are_kept_between_processes_and_an_edit_is_compiled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERBOY_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "templates"
    shutil.copytree(templates_path(), mine)
    compiled_here = Renderer(mine).parts(DIGEST)
    assert len(list((tmp_path / "cache" / "templates-email-text").iterdir())) == 2  # subject, text
    assert len(list((tmp_path / "cache" / "templates-email-html").iterdir())) == 1
    assert Renderer(mine).parts(DIGEST) == compiled_here  # read back from the cache

    (mine / "subject.txt.j2").write_text("Edited: {{ papers | length }} papers")
    assert Renderer(mine).parts(DIGEST)[0] == f"Edited: {len(DIGEST.papers)} papers"
