"""Feeds follow the store: only the feeds whose entries changed are rendered, any host that
shares the store serves them (no shared disk) with the same bytes and ETags, and ``feeds.dir``
mirrors them. SQLite and PostgreSQL where a server is involved."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import feedparser
import httpx
import pytest

from service import feeds, publish, store
from service.cycle import App
from service.server import Server
from service.settings import Settings, parse_settings
from tests.helpers import FIXED_NOW, FIXTURES, free_port, local_yaml, settings_for


def settings(tmp_path: Path, people: str) -> Settings:
    return parse_settings(local_yaml(tmp_path, people), source="paperboy.yaml", base=tmp_path)


ALICE = "  - email: alice@example.org\n    keywords: [model]\n"
BOB = "  - email: bob@example.org\n    keywords: [gaussian splatting]\n"


def docs(app: App) -> dict[str, tuple[str, str]]:
    """Every feed file the store calls for: path -> (ETag, Last-Modified)."""
    out = {}
    with store.reading(app.engine) as session:
        names = store.feed_states(session=session)
    for name in names:
        for kind in feeds.SUFFIXES:
            head = publish.Feeds.head(app.engine, f"{name}.{kind}")
            assert head is not None
            out[f"{name}.{kind}"] = (head[0], head[1].isoformat())
    return out


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
    served = publish.Feeds()
    for name, (tag, _) in first.items():  # what is rendered on request is what the folder holds
        assert served.body(app.engine, app.settings, name, tag) == (tmp_path / "feeds" / name).read_bytes()

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


def test_a_subscriber_who_left_loses_their_feed_and_a_new_folder_gets_every_feed(
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

    def files() -> dict[Path, bytes]:
        folder = tmp_path / "feeds"
        return {
            p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.suffix in (".atom", ".rss")
        }

    before = files()
    shutil.rmtree(tmp_path / "feeds")  # a new host, or a wiped folder
    rendered: list[str] = []
    real = feeds.render
    monkeypatch.setattr(
        feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
    )
    assert alone.write_feeds() > 0
    assert sorted(rendered) == sorted({str(p.with_suffix("")) for p in before})  # every feed, once
    assert alone.write_feeds() == 0  # and then nothing: the stamp is written
    assert files() == before


def test_a_shared_mirror_holds_the_shared_feeds_and_the_server_the_readers_own(
    tmp_path: Path, clocked: App
) -> None:
    """``feeds.mirror: shared``: the folder gets the every-paper feed and the topics' feeds; the
    readers' own feeds are marked in the store and served from it, the same bytes as the full
    mirror's files; switching to it removes the readers' files, and back writes them again."""
    app = clocked
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app.cycle(send=False)
    folder = tmp_path / "feeds"
    full = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.suffix in (".atom", ".rss")}
    alice = feeds.subscriber_feed(token(app, "alice@example.org"))
    assert Path(f"{alice}.atom") in full

    def shared_app(mirror: str) -> App:
        text = local_yaml(tmp_path, ALICE + BOB).replace("feeds: {dir:", f"feeds: {{mirror: {mirror}, dir:")
        return App(
            parse_settings(text, source="paperboy.yaml", base=tmp_path), engine=app.engine, clock=app.clock
        )

    shared = shared_app("shared")
    assert shared.write_feeds() == 0  # nothing new to write: the readers' files go
    left = {p.relative_to(folder) for p in folder.rglob("*") if p.suffix in (".atom", ".rss")}
    assert left == {Path(f"{feeds.ALL}.atom"), Path(f"{feeds.ALL}.rss")}
    served = publish.Feeds()
    for name, (tag, _) in docs(shared).items():  # every feed still answered, as the full mirror had it
        assert served.body(shared.engine, shared.settings, name, tag) == full[Path(name)]

    app.tick()  # type: ignore[attr-defined]
    shutil.copy(FIXTURES / "digest-c.txt", tmp_path / "inbox")  # new papers for Alice
    shared.cycle(send=False)
    assert not list((folder / "u").glob("*.atom"))  # her feed changed; no file for it
    tag, _ = docs(shared)[f"{alice}.atom"]
    fresh = served.body(shared.engine, shared.settings, f"{alice}.atom", tag)
    assert fresh is not None and fresh != full[Path(f"{alice}.atom")]
    assert shared_app("all").write_feeds() > 0  # back to every feed: the readers' files return
    assert (folder / f"{alice}.atom").read_bytes() == fresh


def test_a_folder_stamped_before_feeds_mirror_is_not_rendered_again(
    tmp_path: Path, clocked: App, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A stamp written before ``feeds.mirror`` existed ([format, digest, marks]) says every feed
    is in the folder: upgrading renders nothing again."""
    import json

    app = clocked
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app.cycle(send=False)
    marker = tmp_path / "feeds" / publish.STAMP
    form, mirror, digest, marks = json.loads(marker.read_text())
    assert mirror == "all"
    marker.write_text(json.dumps([form, digest, marks]))
    rendered: list[str] = []
    real = feeds.render
    monkeypatch.setattr(
        feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
    )
    assert app.write_feeds() == 0 and rendered == []
    assert json.loads(marker.read_text())[1] == "all"  # stamped anew


def test_any_host_sharing_the_store_serves_the_feeds_without_their_files(
    served: tuple[App, str], tmp_path: Path, database_url: str
) -> None:
    """A second server whose feeds.dir is empty (another host, no shared disk) answers every
    feed with the same bytes, ETag and 304s as the host that rendered them."""
    app, base = served
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first_port = int(base.rpartition(":")[2])
    # the same configuration (its public URL included), but listening elsewhere, with its own folders
    text = settings_for(elsewhere, database_url, first_port).replace(f"port: {first_port}", f"port: {port}")
    other = parse_settings(text, source=str(elsewhere / "paperboy.yaml"), base=elsewhere)
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
