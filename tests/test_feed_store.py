"""Feeds kept in the store: only the feeds whose entries changed are rendered, any host that
shares the store serves them (no shared disk), and ``feeds.dir`` mirrors what the store holds.
SQLite and PostgreSQL where a server is involved."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import feedparser
import httpx
import pytest

from service import feeds, store
from service.cycle import App
from service.server import Server
from service.settings import Settings, parse_settings
from tests.helpers import FIXED_NOW, FIXTURES, free_port, local_yaml, settings_for


def settings(tmp_path: Path, people: str) -> Settings:
    return parse_settings(local_yaml(tmp_path, people), source="paperboy.yaml", base=tmp_path)


ALICE = "  - email: alice@example.org\n    keywords: [model]\n"
BOB = "  - email: bob@example.org\n    keywords: [gaussian splatting]\n"


def docs(app: App) -> dict[str, tuple[str, str]]:
    """Every stored feed: name -> (etag, modified)."""
    with store.reading(app.engine) as session:
        names = store.doc_marks(session=session)
        heads = {name: store.doc_head(session=session, name=name) for name in names}
    return {name: (h[0], h[1].isoformat()) for name, h in heads.items() if h is not None}


def token(app: App, email: str) -> str:
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=email)
        assert sub is not None
        return sub.token


@pytest.fixture
def clocked(tmp_path: Path) -> App:
    (tmp_path / "inbox").mkdir()
    now = [FIXED_NOW]
    app = App(settings(tmp_path, ALICE + BOB), clock=lambda: now[0], progress=False)
    app.tick = lambda: now.__setitem__(0, now[0] + timedelta(hours=1))  # type: ignore[attr-defined]
    return app


def test_only_the_feeds_whose_entries_changed_are_rendered(tmp_path: Path, clocked: App, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = clocked
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app.cycle(send=False)
    alice, bob = (
        feeds.subscriber_feed(token(app, "alice@example.org")),
        feeds.subscriber_feed(token(app, "bob@example.org")),
    )
    first = docs(app)
    assert set(first) == {f"{n}.{k}" for n in (feeds.ALL, alice, bob) for k in feeds.SUFFIXES}
    for name in first:  # what the store holds is what the folder holds
        with store.reading(app.engine) as session:
            found = store.doc_body(session=session, name=name)
        assert found is not None and found[2] == (tmp_path / "feeds" / name).read_bytes()

    rendered: list[str] = []
    real = feeds.render
    monkeypatch.setattr(
        feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
    )
    app.tick()  # type: ignore[attr-defined]
    with store.reading(app.engine) as session:
        bob_papers = len(store.subscriber_papers(session=session, subscriber_id=2, limit=500))
    shutil.copy(FIXTURES / "digest-c.txt", tmp_path / "inbox")  # new papers: some for Alice, none for Bob
    app.cycle(send=False)
    with store.reading(app.engine) as session:
        assert len(store.subscriber_papers(session=session, subscriber_id=2, limit=500)) == bob_papers
    assert sorted(rendered) == sorted([feeds.ALL, alice])  # Bob's feed was not rendered again
    second = docs(app)
    assert second[f"{bob}.atom"] == first[f"{bob}.atom"]  # its ETag and Last-Modified kept
    assert second[f"{alice}.atom"] != first[f"{alice}.atom"]
    assert second[f"{alice}.atom"][1] == (FIXED_NOW + timedelta(hours=1)).isoformat()


def test_a_subscriber_who_left_loses_their_feed_and_a_new_folder_is_filled_from_the_store(
    tmp_path: Path, clocked: App, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    app = clocked
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app.cycle(send=False)
    bob = feeds.subscriber_feed(token(app, "bob@example.org"))
    assert (tmp_path / "feeds" / f"{bob}.atom").is_file()

    alone = App(settings(tmp_path, ALICE), engine=app.engine, clock=app.clock, progress=False)
    alone.cycle(
        send=False
    )  # Bob left the configuration: his private feed goes, from the store and the folder
    assert not any(name.startswith(bob) for name in docs(alone))
    assert not (tmp_path / "feeds" / f"{bob}.atom").exists()

    before = {p.relative_to(tmp_path / "feeds"): p.read_bytes() for p in (tmp_path / "feeds").rglob("*.*")}
    shutil.rmtree(tmp_path / "feeds")  # a new host, or a wiped folder
    rendered: list[str] = []
    real = feeds.render
    monkeypatch.setattr(
        feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
    )
    assert alone.write_feeds() > 0
    assert rendered == []  # copied from the store, not rendered again
    after = {p.relative_to(tmp_path / "feeds"): p.read_bytes() for p in (tmp_path / "feeds").rglob("*.*")}
    assert after == before


def test_any_host_sharing_the_store_serves_the_feeds_without_their_files(
    served: tuple[App, str], tmp_path: Path, database_url: str
) -> None:
    """A second server whose feeds.dir is empty (another host, no shared disk) answers every
    feed with the same bytes, ETag and 304s as the host that rendered them."""
    app, base = served
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = parse_settings(
        settings_for(elsewhere, database_url, port), source=str(elsewhere / "paperboy.yaml"), base=elsewhere
    )
    second = App(other, progress=False)
    server = Server(lambda: second, host="127.0.0.1", port=port)
    assert server.start()
    try:
        assert not (elsewhere / "feeds").exists()
        names = sorted(docs(app))
        assert len(names) == 2 * (1 + 2 + 2)  # everything, two topics, two subscribers
        with httpx.Client(timeout=10) as http:
            for name in names:
                here = http.get(f"{base}/feeds/{name}")
                there = http.get(f"http://127.0.0.1:{port}/feeds/{name}")
                assert there.status_code == 200 and there.content == here.content
                assert there.content == (tmp_path / "feeds" / name).read_bytes()
                assert there.headers["etag"] == here.headers["etag"]
                again = http.get(
                    f"http://127.0.0.1:{port}/feeds/{name}", headers={"If-None-Match": there.headers["etag"]}
                )
                assert again.status_code == 304 and again.headers["etag"] == there.headers["etag"]
        parsed = feedparser.parse(f"http://127.0.0.1:{port}/feeds/all.atom")
        assert not parsed.bozo and parsed.entries
    finally:
        server.stop()
        second.engine.dispose()


def test_conditional_gets_follow_rfc_9110(served: tuple[App, str]) -> None:
    _, base = served
    with httpx.Client(base_url=base, timeout=10) as http:
        first = http.get("/feeds/all.rss")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert http.get("/feeds/all.rss", headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
        assert http.get("/feeds/all.rss", headers={"If-None-Match": "*"}).status_code == 304
        # If-None-Match wins over If-Modified-Since (13.2.2): a stale tag is a 200 whatever the date
        both = http.get("/feeds/all.rss", headers={"If-None-Match": '"old"', "If-Modified-Since": modified})
        assert both.status_code == 200 and both.content == first.content
        earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
        assert http.get("/feeds/all.rss", headers={"If-Modified-Since": earlier}).status_code == 200
        assert http.get("/feeds/all.rss", headers={"If-Modified-Since": "yesterday"}).status_code == 200
        head = http.head("/feeds/all.rss")
        assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
