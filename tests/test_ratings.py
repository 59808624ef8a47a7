"""Ratings (issue 18, point 1): "more like this" and "less like this" on each paper of the
email and the reader's page. A GET shows the paper and a button and changes nothing (mail
scanners open every link); the POST records the answer, idempotently, and can change it;
a forged link, or one moved to another paper, reader or answer, is refused. Through a real
server and HTTP client, SQLite and PostgreSQL."""

from __future__ import annotations

import re

import httpx
from sqlmodel import select

from service import store
from service.compose import next_digest
from service.cycle import App
from service.ratings import SECRET, rating_url, verified
from tests.test_web import token_of


def alice_papers(app: App) -> tuple[str, list[int]]:
    token = token_of(app, "alice@example.org")
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
        assert sub is not None and sub.id is not None
        rows = store.subscriber_papers(session=session, subscriber_id=sub.id, limit=10)
    return token, [p.id or 0 for _, p in rows]


def ratings(app: App) -> list[tuple[int, int, int]]:
    with store.reading(app.engine) as session:
        return [(r.subscriber_id, r.paper_id, r.value) for r in session.exec(select(store.Rating))]


def key_of(app: App) -> bytes:
    with store.reading(app.engine) as session:
        key = store.secret(session=session, name=SECRET, make=False)
    assert key is not None  # made when the store was prepared
    return key


def test_a_get_shows_a_button_and_the_post_records_the_answer(served: tuple[App, str]) -> None:
    app, base = served
    token, (first, second, *_) = alice_papers(app)
    more = rating_url(f"{base}/", key_of(app), token, first, "more")
    less = rating_url(f"{base}/", key_of(app), token, first, "less")
    with httpx.Client(timeout=10) as http:
        shown = http.get(more)  # what a mail scanner does
        assert shown.status_code == 200 and '<form method="post"' in shown.text
        assert shown.headers["referrer-policy"] == "no-referrer"
        assert ratings(app) == []  # a GET changes nothing

        done = http.post(more)
        assert done.status_code == 200 and 'id="done"' in done.text and "Noted: more papers" in done.text
        again = http.post(more)  # the same answer again: still one answer
        assert again.status_code == 200
        [(_, paper, value)] = ratings(app)
        assert (paper, value) == (first, 1)

        assert http.post(less).status_code == 200  # changed
        assert [(p, v) for _, p, v in ratings(app)] == [(first, -1)]
        assert "You said “less like this” before." in http.get(more).text

        page = http.get(f"{base}/u/{token}").text
        article = re.search(rf'<article id="p{first}">.*?</article>', page, re.S)
        assert article is not None
        assert 'aria-pressed="true">Less like this</button>' in article[0]  # the page shows it
        other = re.search(rf'<article id="p{second}">.*?</article>', page, re.S)
        assert other is not None and "aria-pressed" not in other[0]


def test_a_forged_or_moved_link_is_refused(served: tuple[App, str]) -> None:
    app, base = served
    token, (first, second, *_) = alice_papers(app)
    bob = token_of(app, "bob@example.org")
    good = rating_url(f"{base}/", key_of(app), token, first, "more")
    signature = good.rsplit("/", 1)[1]
    forged = [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # a signature off by one character
        f"{base}/rate/{token}/{second}/more/{signature}",  # replayed for another paper
        f"{base}/rate/{bob}/{first}/more/{signature}",  # for another reader
        f"{base}/rate/{token}/{first}/less/{signature}",  # for the other answer
        f"{base}/rate/{token}/{first}/maybe/{signature}",
        f"{base}/rate/{token}/999999/more/{signature}",
    ]
    with httpx.Client(timeout=10) as http:
        for url in forged:
            assert http.get(url).status_code == 404, url
            assert http.post(url).status_code == 404, url
    assert ratings(app) == []
    assert not verified(key_of(app), token, second, "more", signature)


def test_each_paper_of_the_email_carries_both_links(served: tuple[App, str]) -> None:
    app, base = served
    token, _ = alice_papers(app)
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
        assert sub is not None
        digest = next_digest(session, sub, settings=app.settings, limits=(30, 0), at=app.clock())
    assert digest is not None
    mail = app.renderer.message(digest, sender=app.settings.email.from_, list_id="x").parse()
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    links = re.findall(rf'<a href="({re.escape(base)}/rate/{token}/(\d+)/(more|less)/(\w+))"[^>]*>', html)
    assert len(links) == 2 * len(digest.papers)
    for _, paper, answer, signature in links:
        assert verified(key_of(app), token, int(paper), answer, signature)
    assert text.count("More like this: ") == text.count("Less like this: ") == len(digest.papers)
    with httpx.Client(timeout=10) as http:  # and one of them, followed as a reader does
        url = links[0][0]
        assert http.get(url).status_code == 200 and http.post(url).status_code == 200
    assert len(ratings(app)) == 1
