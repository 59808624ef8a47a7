"""The digest email as a phone reader and a mail client get it (issue 17): titles at the top,
abstracts shortened past the best few, CSS inlined, markup the common clients keep, a
color-scheme declaration, the HTML part under 100 KB whatever max_papers is, LaTeX
leftovers as text. Screenshots in headless Chromium at 375 and 600 pixels, with the
<style> block and without it (as Gmail drops it); PAPERBOY_SCREENSHOTS=DIR keeps them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from service.digest import parse_bytes
from service.message import list_id
from service.render import FULL, HTML_BUDGET, TOC, Renderer, templates_path
from service.views import PaperView, paper_link
from tests.helpers import FIXTURES
from tests.oracle import DIGEST, SENDER
from tests.test_web import chromium

PAGE = "https://papers.example.org/u/TOKEN"


def fixture_papers() -> list[PaperView]:
    """Every paper of the sample digests, as an email shows them, each matching 'model'."""
    out = []
    for name in ("digest-a.txt", "digest-b.txt", "digest-c.txt"):
        _, entries = parse_bytes((FIXTURES / name).read_bytes(), name=name, mtime=datetime.now(UTC))
        for i, e in enumerate(entries):
            out.append(
                PaperView.build(
                    title=e.title,
                    abstract=e.abstract,
                    link=paper_link("https://huggingface.co/papers?q={title}", title=e.title, key=e.title),
                    terms=("model", "language model*"),
                    score=1,
                    via=("keywords", "topic:llm-safety") if i % 3 == 0 else ("keywords",),
                    anchor=f"p{len(out) + 1}",
                )
            )
    return out


def email(papers: list[PaperView]) -> tuple[EmailMessage, str, str]:
    digest = replace(DIGEST, papers=papers, more=0, page_url=PAGE)
    mail = Renderer(templates_path()).message(digest, sender=SENDER, list_id=list_id(SENDER))
    msg = mail.parse()
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return msg, html, text


def test_two_hundred_papers_stay_under_the_clipping_size() -> None:
    papers = (fixture_papers() * 3)[:200]
    assert len(papers) == 200
    _, html, text = email(papers)
    size = len(html.encode())
    assert size <= HTML_BUDGET, size
    shown = len(re.findall(r'<div class="paper"', html))
    assert 20 < shown < 200  # the best that fit; the rest are one tap away
    assert f"{200 - shown} more on your page" in html
    assert f"{200 - shown} more on your page: {PAGE}" in text
    assert text.count("\n   https://huggingface.co/papers?q=") == shown  # the text part says the same


def test_the_email_reads_on_a_phone() -> None:
    papers = fixture_papers()[:12]
    _, html, text = email(papers)
    # titles at the top, each a link to the paper below
    toc = re.search(r'<ol class="toc"[^>]*>(.*?)</ol>', html, re.S)
    assert toc is not None
    anchors = re.findall(r'<a href="#(p\d+)"', toc[1])
    assert anchors == [f"p{i}" for i in range(1, TOC + 1)]
    for anchor in anchors:
        assert re.search(f'<div class="paper"[^>]* id="{anchor}"', html)
    # the best few in full; the others shortened, the whole text a tap away on the page
    abstracts = re.findall(r'<p class="abstract"[^>]*>(.*?)</p>', html, re.S)
    assert len(abstracts) == 12
    for i, (paper, shown) in enumerate(zip(papers, abstracts, strict=True)):
        if i < FULL or paper.short is None:
            assert "Read the whole abstract" not in shown
        else:
            assert f'<a href="{PAGE}#{paper.anchor}"' in shown and "…" in shown
            assert len(re.sub(r"<[^>]+>", "", shown)) < len(paper.abstract)
    assert f"Read the whole abstract: {PAGE}#p4" in text
    # why each came, in words (no "score")
    assert "score" not in re.sub(r"<[^>]+>", "", html) and "score" not in text  # (a data- attribute only)
    assert re.search(r'<p class="why"[^>]*>(Title|Abstract) mentions <em>', html)


def test_the_markup_is_what_mail_clients_keep() -> None:
    _, html, _ = email(fixture_papers()[:6])
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    style = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(style) == 1 and style[0].strip().startswith("@media (prefers-color-scheme: dark)")
    body = html[html.index("<body") :]
    assert "rem;" not in html and "var(--" not in html  # units and variables Outlook and Gmail ignore
    for tag in ("article", "section", "footer", "header", "nav", "main"):
        assert f"<{tag}" not in body
    unstyled = [t for t in re.findall(r"<(?:p|div|a|ol|li|mark)\b[^>]*>", body) if "style=" not in t]
    assert unstyled == []  # every element carries its own style: nothing depends on <style>
    assert '<table role="presentation"' in body and 'width="600"' in body  # Outlook's width


def test_latex_leftovers_read_as_text_and_links_end_where_the_url_does() -> None:
    by_title = {p.title: p for p in fixture_papers()}
    child = next(p for t, p in by_title.items() if "ChildPlay" in t)
    assert "{" not in child.abstract
    assert "ChildPlay GitHub Repository (https://github.com/BlueVelvetSackOfGoldPotatoes/child-play)" in (
        child.abstract
    )
    assert '<a href="https://github.com/BlueVelvetSackOfGoldPotatoes/child-play">' in child.abstract_html
    verbalizer = next(p for t, p in by_title.items() if "Verbalizer" in t)
    assert "\u201cpostive\u201d" in verbalizer.abstract and "``" not in verbalizer.abstract
    mistakes = next(p for p in by_title.values() if "CoTErrorSet will be published" in p.abstract)
    assert "\\url" not in mistakes.abstract
    assert '<a href="https://github.com/YookiTong/Learn-from-Mistakes-CotErrorSet">' in mistakes.abstract_html


def test_screenshots_on_a_phone_and_a_wide_client(tmp_path: Path) -> None:
    """The HTML part in Chromium at 375 and 600 px, as sent and with <style> removed (Gmail
    drops it for some accounts): the inlined styles keep the layout either way."""
    browser = chromium()
    _, html, _ = email(fixture_papers()[:8])
    stripped = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    keep = os.environ.get("PAPERBOY_SCREENSHOTS")
    for label, page in (("sent", html), ("no-style", stripped)):
        source = tmp_path / f"email-{label}.html"
        source.write_text(page, encoding="utf-8")
        for width in (375, 600):
            shot = tmp_path / f"email-{label}-{width}.png"
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}",
                    f"--window-size={width},1600",
                    source.as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == width
            assert shot.stat().st_size > 20_000
            if keep:
                shutil.copy(shot, Path(keep) / shot.name)
    # without <style>, the inline styles alone: the same page, byte for byte, once rendered
    assert (tmp_path / "email-sent-375.png").read_bytes() == (
        tmp_path / "email-no-style-375.png"
    ).read_bytes()
