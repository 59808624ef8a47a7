"""Atom and RSS 2.0 feeds (feedgen): what goes into each, where it lives, writing it.

Files under ``feeds.dir`` (their names are made here and nowhere else:
:data:`ALL`, :func:`topic_feed`, :func:`subscriber_feed`, :data:`FEED_FILE`):

- ``all.atom`` / ``all.rss``: every paper, newest first;
- ``topics/<name>.atom`` / ``.rss``: the papers each topic matched (public);
- ``u/<token>.atom`` / ``u/<token>.rss``: one subscriber's matches, behind an
  unguessable token (never the address), newest first.

Entry ids derive from the paper key (``urn:uuid:`` + UUID5 of the key), so
they stay the same across restarts, re-ingests and other spellings of the
title. Each file is written to a temporary file beside it, flushed to disk
and renamed over the old one: a reader sees the old feed or the new one,
never half of one. A feed's ``updated`` is its newest entry's time, so an
unchanged feed is rewritten byte for byte the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session

from . import store
from .log import event
from .render import paper_link
from .settings import TOPIC_NAME, Settings

if TYPE_CHECKING:
    from feedgen.feed import FeedGenerator

log = logging.getLogger("paperboy.feeds")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ALL = "all"  # every paper
SUFFIXES = ("atom", "rss")
TOKEN = r"[A-Za-z0-9_-]{16,128}"


def topic_feed(name: str) -> str:
    """The feed of a topic (public), as a name under ``feeds.dir`` without its suffix."""
    return f"topics/{name}"


def subscriber_feed(token: str) -> str:
    """A subscriber's private feed, behind their token (never their address)."""
    return f"u/{token}"


# Every file name a feed can have (what the web server agrees to serve).
FEED_FILE = re.compile(
    rf"(?:{ALL}|topics/{TOPIC_NAME.pattern.strip('^$')}|u/{TOKEN})\.({'|'.join(SUFFIXES)})"
)


def feed_url(base_url: str, name: str, kind: str = "atom") -> str:
    return f"{base_url}{name}.{kind}"


def entry_id(key: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "paperboy:paper:" + key))


@dataclass(frozen=True, slots=True)
class FeedItem:
    key: str
    title: str
    abstract: str
    published: datetime
    terms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedSpec:
    name: str  # path under feeds.dir, without the suffix: ALL, topic_feed(), subscriber_feed()
    title: str
    subtitle: str


def render(
    spec: FeedSpec, items: Sequence[FeedItem], *, base_url: str, link_template: str
) -> dict[str, bytes]:
    """The feed as ``{".atom": bytes, ".rss": bytes}``; ``items`` newest first.

    Atom says what its text is (``type="text"``, the default): readers show it as text. RSS
    says nothing, and readers take a description (and often a title) as HTML: there the text
    is HTML-escaped before it is XML-escaped, so ``<script>`` in an abstract reaches the
    reader as the characters ``<script>``, never as markup (and ``<think>`` is not lost)."""
    out = {}
    for suffix, kind in ((".atom", "application/atom+xml"), (".rss", "application/rss+xml")):
        fg = _feed(spec, items, base_url=base_url, link_template=link_template, html=suffix == ".rss")
        fg.link(href=base_url, rel="alternate", replace=True)
        fg.link(href=base_url + spec.name + suffix, rel="self", type=kind)
        out[suffix] = fg.atom_str(pretty=True) if suffix == ".atom" else fg.rss_str(pretty=True)
    return out


def _feed(
    spec: FeedSpec, items: Sequence[FeedItem], *, base_url: str, link_template: str, html: bool
) -> FeedGenerator:
    from feedgen.feed import FeedGenerator

    text = escape if html else str
    fg = FeedGenerator()
    newest = max((i.published for i in items), default=_EPOCH)
    fg.id(entry_id("feed:" + spec.name))
    fg.title(text(spec.title))
    fg.subtitle(text(spec.subtitle))  # also the RSS <description>
    fg.author({"name": "paperboy"})
    fg.generator("paperboy")
    fg.language("en")
    fg.updated(newest)
    fg.lastBuildDate(newest)
    for item in items:
        entry = fg.add_entry(order="append")
        entry.id(entry_id(item.key))
        entry.guid(entry_id(item.key), permalink=False)
        entry.title(text(item.title))
        entry.link(href=paper_link(link_template, title=item.title, key=item.key))
        entry.summary(text(item.abstract))
        entry.published(item.published)
        entry.updated(item.published)
        for term in item.terms:
            entry.category(term=term)
    return fg


def write(spec: FeedSpec, files: dict[str, bytes], directory: Path) -> int:
    """Write each rendered file to ``directory/<name><suffix>`` atomically; how many changed."""
    target = directory / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    return sum(_atomic_write(target.with_name(target.name + suffix), data) for suffix, data in files.items())


def _atomic_write(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False  # unchanged: keep the file (and its mtime) as it was
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STAMP = ".paperboy-feeds"  # in feeds.dir: what the feeds there were last rendered from (never served)
FORMAT = 3  # what a feed holds, as this code writes it (2: RSS text HTML-escaped; 3: kept in the store)
_SETTINGS_PRINTS: dict[int, tuple[Settings, str, str]] = {}


def _settings_prints(settings: Settings) -> tuple[str, str]:
    """Hashes of what the configuration puts into feeds: into every feed (the feeds section,
    the paper link), and into any (that, the topics' texts and the subscribers' names).
    Computed once per Settings."""
    known = _SETTINGS_PRINTS.get(id(settings))
    if known is not None and known[0] is settings:
        return known[1], known[2]
    common = {"feeds": settings.feeds.model_dump(mode="json"), "paper_link": settings.email.paper_link}
    shown = {
        **common,
        "topics": {n: [t.title, t.description] for n, t in settings.topics.items()},
        "names": [[s.email.lower(), s.name] for s in settings.subscribers],  # the personal feeds' titles
    }
    values = (_digest(common), _digest(shown))
    if len(_SETTINGS_PRINTS) > 8:
        _SETTINGS_PRINTS.clear()
    _SETTINGS_PRINTS[id(settings)] = (settings, *values)
    return values


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def stamp(engine: Engine, settings: Settings) -> str:
    """What the feeds would be rendered from now: when it equals the stamp written beside the
    feeds at their last rendering, no feed can have changed, and none is rendered."""
    with store.reading(engine) as session:
        marks = store.feed_marks(session=session)
    return json.dumps([FORMAT, _settings_prints(settings)[1], marks])


@dataclass(frozen=True, slots=True)
class _Wanted:
    spec: FeedSpec
    mark: str  # what the feed is rendered from: when the stored copy has the same, it is current
    kind: str  # ALL, "topic" or "subscriber"
    key: str = ""  # the topic's name, the subscriber's token


def _wanted(settings: Settings, sources: store.FeedSources) -> list[_Wanted]:
    """Every feed the configuration and the store call for, each with its mark."""
    cfg = settings.feeds
    common = _settings_prints(settings)[0]
    newest, forgotten = sources.papers

    def mark(*parts: object) -> str:
        return _digest([FORMAT, common, forgotten, *parts])

    out = [_Wanted(FeedSpec(ALL, cfg.title, "Every paper paperboy has seen"), mark(ALL, newest), ALL)]
    for name, topic in settings.topics.items():
        about = topic.description or f"Papers on {name}, chosen by paperboy"
        spec = FeedSpec(topic_feed(name), topic.title or f"{cfg.title}: {name}", about)
        entries = sources.topics.get(name, (0, 0))
        out.append(_Wanted(spec, mark("topic", name, spec.title, about, *entries), "topic", name))
    for token, (person, matches, top) in sources.subscribers.items():
        title = f"{cfg.title}: papers for {person or 'you'}"
        spec = FeedSpec(subscriber_feed(token), title, "Papers matching your keywords")
        out.append(_Wanted(spec, mark("subscriber", title, matches, top), "subscriber", token))
    return out


def _items(session: Session, settings: Settings, wanted: _Wanted) -> list[FeedItem]:
    limit = settings.feeds.max_entries
    if wanted.kind == ALL:
        return [
            FeedItem(p.key, p.title, p.abstract, p.first_seen_at)
            for p in store.latest_papers(session=session, limit=limit)
        ]
    if wanted.kind == "topic":
        return [
            FeedItem(p.key, p.title, p.abstract, p.first_seen_at, tuple(t.terms))
            for t, p in store.topic_papers(session=session, topic=wanted.key, limit=limit)
        ]
    sub = store.subscriber_by_token(session=session, token=wanted.key)
    assert sub is not None and sub.id is not None  # feed_sources named it
    return [
        FeedItem(p.key, p.title, p.abstract, p.first_seen_at, tuple(d.terms))
        for d, p in store.subscriber_papers(session=session, subscriber_id=sub.id, limit=limit)
    ]


SAVE_EVERY = 100  # feeds rendered per transaction that stores them


def write_all(engine: Engine, settings: Settings, *, at: datetime | None = None) -> int:
    """Render the feeds whose entries changed, store them, and mirror them into ``feeds.dir``;
    how many files there changed.

    The store is where feeds live (``paperboy serve`` answers from it on any host): each
    stored feed keeps the mark it was rendered from, and only a feed whose mark differs is
    rendered again. A quiet poll stops sooner: when the stamp beside the files equals
    :func:`stamp` (a few aggregate queries), nothing is read or rendered at all."""
    cfg = settings.feeds
    now = stamp(engine, settings)
    marker = cfg.dir / STAMP
    mirrored = marker.is_file() and (cfg.dir / f"{ALL}.atom").is_file()
    if mirrored and marker.read_text() == now:
        return 0
    at = at or datetime.now(UTC)
    assert cfg.base_url is not None  # Settings fills it in
    base_url, link = cfg.base_url, settings.email.paper_link
    with store.reading(engine) as session:
        wanted = _wanted(settings, store.feed_sources(session=session))
        stored = store.doc_marks(session=session)
    names = {w.spec.name + "." + suffix for w in wanted for suffix in SUFFIXES}
    stale = [w for w in wanted if any(stored.get(w.spec.name + "." + s) != w.mark for s in SUFFIXES)]
    gone = sorted(set(stored) - names)
    changed = 0
    with store.reading(engine) as session:
        for start in range(0, len(stale), SAVE_EVERY):
            docs: list[store.NewDoc] = []
            for w in stale[start : start + SAVE_EVERY]:
                files = render(w.spec, _items(session, settings, w), base_url=base_url, link_template=link)
                changed += write(w.spec, files, cfg.dir)
                docs.extend(_doc(w, suffix, body, at) for suffix, body in files.items())
                session.expunge_all()  # the rows read for this feed are not needed again
            with store.transaction(engine) as writing:
                store.save_docs(session=writing, docs=docs)
    if gone:
        with store.transaction(engine) as writing:
            store.drop_docs(session=writing, names=gone)
        for name in gone:
            if FEED_FILE.fullmatch(name):  # a feed this code named, never another path
                (cfg.dir / name).unlink(missing_ok=True)
    if not mirrored:  # a new folder (or host): every stored feed into it, not only those rendered
        cfg.dir.mkdir(parents=True, exist_ok=True)
        with store.reading(engine) as session:
            for name, body in store.doc_bodies(session=session):
                if name in names:
                    path = cfg.dir / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    changed += _atomic_write(path, body)
    if stale or gone or changed:
        event(log, "feeds.written", rendered=len(stale), dropped=len(gone), changed=changed, dir=cfg.dir)
    _atomic_write(marker, now.encode())
    return changed


def _doc(wanted: _Wanted, suffix: str, body: bytes, at: datetime) -> store.NewDoc:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return store.NewDoc(wanted.spec.name + suffix, wanted.mark, etag, at, body)
