"""The reader's page (/u/<token>) and a topic's (/topics/<name>), through a real server
(SQLite and PostgreSQL) with a real HTTP client, and in headless Chromium at a phone's
and a desktop's width. PAPERBOY_SCREENSHOTS=DIR keeps the screenshots for a look."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from service import pages, store
from service.cycle import App
from tests.test_web import chromium, token_of

ARTICLE = re.compile(r"<article id=\"p\d+\">.*?</article>", re.S)


def test_the_readers_page_shows_their_papers_why_and_how_to_follow(served: tuple[App, str]) -> None:
    app, base = served
    token = token_of(app, "alice@example.org")
    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get(f"/u/{token}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # private: never indexed, never cached between, never in a Referer
        assert page.headers["x-robots-tag"] == "noindex"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "no-store" in page.headers["cache-control"]
        html = page.text
        assert "<h1>Papers for Alice</h1>" in html
        assert "Papers that mention TÜLU or gaussian." in html  # the rules, in words
        assert f'value="{base}/feeds/u/{token}.atom"' in html and f'href="{base}/feeds/u/{token}.rss"' in html
        assert f'href="{base}/unsubscribe/{token}"' in html
        articles = ARTICLE.findall(html)
        with store.reading(app.engine) as session:
            sub = store.subscriber_by_email(session=session, email="alice@example.org")
            assert sub is not None and sub.id is not None
            matched = store.subscriber_paper_count(session=session, subscriber_id=sub.id)
        assert len(articles) == matched > 0
        for article in articles:  # every paper says why it came, in words, its terms marked
            why = re.search(r'<p class="why">(.*?)</p>', article, re.S)
            said = r"(Title|Abstract) mentions <em>(TÜLU|gaussian)</em>.*\."
            assert why and re.fullmatch(said, why[1]), why
            assert "<mark>" in article
        assert '<h2 class="day">Saturday 14 March' in html  # grouped by the digest's day

        assert http.get("/u/Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4").status_code == 404
        topic = http.get("/topics/3d-vision")
        assert topic.status_code == 200 and "<h1>3D vision</h1>" in topic.text
        assert "Gaussians, NeRFs and friends" in topic.text and "unsubscribe" not in topic.text.lower()
        assert f'value="{base}/feeds/topics/3d-vision.atom"' in topic.text
        assert http.get("/topics/no-such-topic").status_code == 404


def test_a_long_list_is_paged(served: tuple[App, str], monkeypatch: pytest.MonkeyPatch) -> None:
    app, base = served
    monkeypatch.setattr(pages, "PAGE_SIZE", 1)
    token = token_of(app, "alice@example.org")
    with httpx.Client(base_url=base, timeout=10) as http:
        first = http.get(f"/u/{token}")
        count = int(re.search(r"Page 1 of (\d+) · (\d+) papers", first.text)[2])  # type: ignore[index]
        last = count
        assert count > 1 and f'href="{base}/u/{token}?page=2">Older' in first.text
        seen = []
        for number in range(1, last + 1):
            html = http.get(f"/u/{token}", params={"page": number}).text
            seen += re.findall(r'<h3><a href="[^"]*" rel="noreferrer">(.*?)</a></h3>', html, re.S)
        assert len(seen) == count and len(set(seen)) == count  # every paper once, over the pages
        beyond = http.get(f"/u/{token}", params={"page": 999}).text
        assert f"Page {last} of {last}" in beyond  # past the end: the last page
        assert "Page 1 of" in http.get(f"/u/{token}", params={"page": "x'; DROP"}).text


def test_the_page_in_chromium_on_a_phone_and_a_desktop(served: tuple[App, str], tmp_path: Path) -> None:
    app, base = served
    browser = chromium()
    token = token_of(app, "alice@example.org")
    keep = os.environ.get("PAPERBOY_SCREENSHOTS")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    for width in (375, 1200):
        shot = tmp_path / f"reader-{width}.png"
        subprocess.run(
            [
                *flags,
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--screenshot={shot}",
                f"--window-size={width},1400",
                f"{base}/u/{token}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        assert int.from_bytes(data[16:20], "big") == width  # the PNG is as wide as the window
        if keep:
            shutil.copy(shot, Path(keep) / shot.name)
    dom = subprocess.run(
        [*flags, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", f"{base}/u/{token}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'id="subscribe"' in dom and dom.count("<article id=") > 0 and 'id="unsubscribe"' in dom


def test_the_feeds_and_the_email_lead_to_the_page(served: tuple[App, str]) -> None:
    import feedparser

    app, base = served
    token = token_of(app, "alice@example.org")
    with httpx.Client(base_url=base, timeout=10) as http:
        feed = feedparser.parse(http.get(f"/feeds/u/{token}.atom").content)
        rss = feedparser.parse(http.get(f"/feeds/u/{token}.rss").content)
        topic = feedparser.parse(http.get("/feeds/topics/3d-vision.atom").content)
    assert [link.href for link in feed.feed.links if link.rel == "alternate"] == [f"{base}/u/{token}"]
    assert rss.feed.link == f"{base}/u/{token}"
    assert [link.href for link in topic.feed.links if link.rel == "alternate"] == [f"{base}/topics/3d-vision"]

    from service.compose import next_digest

    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
        assert sub is not None
        digest = next_digest(session, sub, settings=app.settings, limits=(1, 0), at=app.clock())
    assert digest is not None and digest.more > 0
    mail = app.renderer.message(digest, sender=app.settings.email.from_, list_id="x")
    body = mail.parse()
    html = body.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert re.search(f'<a href="{re.escape(base)}/u/{token}"[^>]*>{digest.more} more on your page</a>', html)
    assert f"Your page (every paper, your feeds and rules): {base}/u/{token}" in text
