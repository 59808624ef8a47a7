"""Which feeds exist, when each is rendered, and serving them from the store.

Every feed has a *mark*: a hash of what it shows (its entry count and newest
entry, from :func:`store.feed_sources`; the papers forgotten; its title and
the configuration's feed settings; the feed format). The store keeps each
feed's mark and when it last changed (``feed_states``). From that:

- the cycle (:func:`publish`) updates the marks that changed and renders only
  those feeds, into ``feeds.dir`` (a mirror for a web server of your own; with
  ``feeds.mirror: shared``, only the feeds that are not a reader's own);
  a poll that changed nothing stops at :func:`stamp` (a few aggregates) and
  reads or renders nothing;
- the web server (:class:`Feeds`) answers a conditional GET from one row by
  key (the ETag derives from the mark), on any host sharing the store, and
  renders a feed only for a reader whose copy is out of date, keeping what it
  rendered (by ETag) for the next reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session

from . import feeds as feedfiles
from . import store
from .feeds import (
    ALL,
    FEED_FILE,
    SUFFIXES,
    FeedItem,
    FeedSpec,
    dated,
    reader_page,
    subscriber_feed,
    topic_feed,
    topic_page,
)
from .log import event
from .rules.words import describe
from .settings import Settings, SubscriberConfig

log = logging.getLogger("paperboy.feeds")

STAMP = ".paperboy-feeds"  # in feeds.dir: what the feeds there were last rendered from (never served)
# what a feed holds, as this code writes it (2: RSS text HTML-escaped; 3: marks in the store;
# 4: entries dated by their digest, readable categories, subtitles in words, pages as alternates)
FORMAT = 4


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def etag(mark: str, kind: str) -> str:
    """The ETag of a feed of ``kind`` (``atom``, ``rss``) rendered from ``mark``."""
    return '"' + hashlib.sha256(f"{mark}.{kind}".encode()).hexdigest()[:32] + '"'


def stamp(engine: Engine, settings: Settings) -> str:
    """What the feeds would be rendered from now: when it equals the stamp written beside the
    feeds at their last rendering, no feed can have changed, and none is rendered."""
    with store.reading(engine) as session:
        marks = store.feed_marks(session=session)
    return json.dumps([FORMAT, settings.feeds.mirror, settings.feed_digests[1], marks])


def _mirror_of(stamp: str) -> str | None:
    """Which feeds (``feeds.mirror``) the folder holds, by its stamp (None: no stamp of ours)."""
    try:
        values = json.loads(stamp)
    except ValueError:
        return None
    return values[1] if len(values) == 4 else "all"  # a stamp from before feeds.mirror: all of them


@dataclass(frozen=True, slots=True)
class Wanted:
    """A feed as the configuration and the store call for it."""

    spec: FeedSpec
    mark: str  # what the feed is rendered from: when the stored mark is the same, it is current
    kind: str  # ALL, "topic" or "subscriber"
    key: str = ""  # the topic's name, the subscriber's token
    subscriber_id: int = 0  # the subscriber's (their feed's entries are read by it)


def _mark(settings: Settings, forgotten: int, *parts: object) -> str:
    return _digest([FORMAT, settings.feed_digests[0], forgotten, *parts])


def _all(settings: Settings, sources: store.FeedSources) -> Wanted:
    title = settings.feeds.title
    spec = FeedSpec(
        ALL,
        f"{title}: every paper",
        f"Every paper of the daily digests {title} has read, newest first.",
        page=settings.http.url,
    )
    return Wanted(spec, _mark(settings, sources.papers[1], ALL, sources.papers[0], spec.title), ALL)


def _topic(settings: Settings, sources: store.FeedSources, name: str) -> Wanted:
    topic, title = settings.topics[name], settings.feeds.title
    about = topic.description or describe(keywords=topic.keywords, query=topic.query, exclude=topic.exclude)
    page = topic_page(settings.http.url, name)
    spec = FeedSpec(topic_feed(name), topic.title or f"{title}: {name}", about, page=page)
    entries = sources.topics.get(name, (0, 0))
    return Wanted(
        spec, _mark(settings, sources.papers[1], "topic", name, spec.title, about, *entries), "topic", name
    )


def _subscriber(
    settings: Settings,
    forgotten: int,
    token: str,
    subscriber_id: int,
    rules: SubscriberConfig | None,
    person: str | None,
    matches: int,
    top: int,
) -> Wanted:
    title = f"{settings.feeds.title}: papers for {person or 'you'}"
    about = "Your papers." if rules is None else subscriber_rules_in_words(rules)
    spec = FeedSpec(subscriber_feed(token), title, about, page=reader_page(settings.http.url, token))
    mark = _mark(settings, forgotten, "subscriber", title, about, matches, top)
    return Wanted(spec, mark, "subscriber", token, subscriber_id)


def subscriber_rules_in_words(rules: SubscriberConfig) -> str:
    return describe(keywords=rules.keywords, query=rules.query, topics=rules.topics, exclude=rules.exclude)


def wanted(settings: Settings, sources: store.FeedSources) -> list[Wanted]:
    """Every feed the configuration and the store call for, each with its mark."""
    out = [_all(settings, sources)]
    out += [_topic(settings, sources, name) for name in settings.topics]
    forgotten = sources.papers[1]
    out += [
        _subscriber(
            settings, forgotten, token, subscriber_id, settings.subscriber(email), person, matches, top
        )
        for token, (subscriber_id, email, person, matches, top) in sources.subscribers.items()
    ]
    return out


def items(
    session: Session, settings: Settings, feed: Wanted, read: Mapping[int, list[store.FeedRow]] | None = None
) -> list[FeedItem]:
    """The entries of ``feed``, newest first, read from the store (a subscriber's: from
    ``read``, their rows read with other subscribers', when given)."""
    limit = settings.feeds.max_entries
    if feed.kind == ALL:
        return [_item(p) for p in store.latest_papers(session=session, limit=limit)]
    if feed.kind == "topic":
        topic = store.topic_papers(session=session, topic=feed.key, limit=limit)
        return [_item(p, t.terms) for t, p in topic]
    if read is None:
        read = store.subscriber_feed_rows(session=session, subscriber_ids=[feed.subscriber_id], limit=limit)
    return [
        FeedItem(r.key, r.title, r.abstract, dated(r.digest_date, r.first_seen_at, r.line), tuple(r.terms))
        for r in read[feed.subscriber_id]
    ]


def _item(paper: store.Paper, terms: Sequence[str] = ()) -> FeedItem:
    published = dated(paper.digest_date, paper.first_seen_at, paper.line)
    return FeedItem(paper.key, paper.title, paper.abstract, published, tuple(terms))


SAVE_EVERY = 500  # marks per transaction that records them
READ_EVERY = 200  # feeds whose entries are read in one query, and written with one flush to disk


def _folder(engine: Engine, settings: Settings) -> tuple[str, bool, bool]:
    """The stamp of the feeds now; whether ``feeds.dir`` holds the feeds ``feeds.mirror`` asks
    for; whether they are current (the stamp written beside them is the same)."""
    now = stamp(engine, settings)
    marker = settings.feeds.dir / STAMP
    before = marker.read_text() if marker.is_file() else ""
    mirrored = _mirror_of(before) == settings.feeds.mirror and (settings.feeds.dir / f"{ALL}.atom").is_file()
    return now, mirrored, mirrored and before == now


def current(engine: Engine, settings: Settings) -> bool:
    """Nothing for :func:`publish` to do: the feeds in ``feeds.dir`` are what the store would
    render now (a few aggregate queries)."""
    return _folder(engine, settings)[2]


def publish(engine: Engine, settings: Settings, *, at: datetime | None = None) -> int:
    """After a cycle: record the marks of the feeds that changed, render those feeds into
    ``feeds.dir``, and drop the feeds no one calls for any more; how many files changed.
    When nothing a feed shows changed since the last time (:func:`stamp`), nothing is read
    or rendered: a quiet poll costs a few aggregate queries, whatever the number of
    subscribers. A new ``feeds.dir`` (or host) gets every feed rendered into it."""
    cfg = settings.feeds
    now, mirrored, up_to_date = _folder(engine, settings)
    if up_to_date:
        return 0
    at = at or datetime.now(UTC)
    assert cfg.base_url is not None  # Settings fills it in
    base_url, link = cfg.base_url, settings.email.paper_link
    with store.reading(engine) as session:
        feeds = wanted(settings, store.feed_sources(session=session))
        stored = store.feed_states(session=session)
    changed_marks = {f.spec.name: f.mark for f in feeds if stored.get(f.spec.name) != f.mark}
    shared = cfg.mirror == "shared"  # the readers' own feeds are not written, and not left there
    written = [f for f in feeds if not shared or f.kind != "subscriber"]
    stale = [f for f in written if not mirrored or f.spec.name in changed_marks]
    gone = sorted(set(stored) - {f.spec.name for f in feeds})
    unwritten = [f.spec.name for f in feeds if shared and not mirrored and f.kind == "subscriber"]
    changed = 0
    mirror = feedfiles.Mirror(cfg.dir)
    try:
        with store.reading(engine) as session:
            for start in range(0, len(stale), READ_EVERY):
                batch = stale[start : start + READ_EVERY]
                readers = [f.subscriber_id for f in batch if f.kind == "subscriber"]
                read = store.subscriber_feed_rows(
                    session=session, subscriber_ids=readers, limit=cfg.max_entries
                )
                for feed in batch:
                    entries = items(session, settings, feed, read)
                    files = feedfiles.render(feed.spec, entries, base_url=base_url, link_template=link)
                    changed += mirror.stage(feed.spec, files)
                mirror.commit()
                session.expunge_all()  # the rows read for these feeds are not needed again
    finally:
        mirror.abort()
    names = list(changed_marks)
    for start in range(0, len(names), SAVE_EVERY):
        with store.transaction(engine) as writing:
            chunk = {name: changed_marks[name] for name in names[start : start + SAVE_EVERY]}
            store.save_states(session=writing, marks=chunk, at=at)
    if gone:
        with store.transaction(engine) as writing:
            store.drop_states(session=writing, names=gone)
    for name in gone + unwritten:
        for kind in SUFFIXES:
            if FEED_FILE.fullmatch(f"{name}.{kind}"):  # a feed this code named, never another path
                (cfg.dir / f"{name}.{kind}").unlink(missing_ok=True)
    if stale or gone:
        event(log, "feeds.written", rendered=len(stale), dropped=len(gone), changed=changed, dir=cfg.dir)
    feedfiles.atomic_write(cfg.dir / STAMP, now.encode())
    return changed


class Feeds:
    """Feeds as the web server answers them, on any host sharing the store: the ETag and
    Last-Modified from the feed's row (one query by key), the body rendered from the store
    on request and kept (by ETag, up to ``budget`` bytes) for the next reader."""

    def __init__(self, budget: int = 64 << 20) -> None:
        self.budget = budget
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def head(engine: Engine, path: str) -> tuple[str, datetime] | None:
        """The ETag and Last-Modified of the feed at ``path`` (``u/<token>.atom``); None: none."""
        name, _, kind = path.rpartition(".")
        with store.reading(engine) as session:
            state = store.feed_state(session=session, name=name)
        return None if state is None else (etag(state[0], kind), state[1])

    def body(self, engine: Engine, settings: Settings, path: str, tag: str) -> bytes | None:
        """The feed at ``path`` as of ETag ``tag``: kept, or rendered from the store now."""
        with self._lock:
            kept = self._kept.get((path, tag))
            if kept is not None:
                self._kept.move_to_end((path, tag))
                return kept
        rendered = self._render(engine, settings, path)
        if rendered is not None:
            self._keep((path, tag), rendered)
        return rendered

    def _render(self, engine: Engine, settings: Settings, path: str) -> bytes | None:
        name, _, kind = path.rpartition(".")
        assert settings.feeds.base_url is not None  # Settings fills it in
        with store.reading(engine) as session:
            feed = self._feed(session, settings, name)
            if feed is None:
                return None
            entries = items(session, settings, feed)
        files = feedfiles.render(
            feed.spec,
            entries,
            base_url=settings.feeds.base_url,
            link_template=settings.email.paper_link,
            kinds=[kind],
        )
        return files["." + kind]

    @staticmethod
    def _feed(session: Session, settings: Settings, name: str) -> Wanted | None:
        """The feed called ``name`` (its spec: the mark is not needed to render it)."""
        empty = store.FeedSources(papers=(0, 0))
        if name == ALL:
            return _all(settings, empty)
        if name.startswith("topics/"):
            topic = name.removeprefix("topics/")
            return _topic(settings, empty, topic) if topic in settings.topics else None
        token = name.removeprefix("u/")
        sub = store.subscriber_by_token(session=session, token=token)
        if sub is None or sub.id is None or not sub.active:
            return None
        rules = settings.subscriber(sub.email)
        return _subscriber(settings, 0, token, sub.id, rules, sub.name, 0, 0)

    def _keep(self, key: tuple[str, str], body: bytes) -> None:
        with self._lock:
            if key in self._kept or len(body) > self.budget:
                return
            self._kept[key] = body
            self._size += len(body)
            while self._size > self.budget:
                _, dropped = self._kept.popitem(last=False)
                self._size -= len(dropped)
