"""Atom and RSS 2.0 feeds (feedgen): what goes into each, its name, writing its file.

Which feeds are rendered when, and serving them from the store, is
:mod:`service.publish`. The feeds (their names are made here and nowhere
else: :data:`ALL`, :func:`topic_feed`, :func:`subscriber_feed`,
:data:`FEED_FILE`), under ``/feeds/`` and mirrored into ``feeds.dir``:

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

import functools
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from .rules.words import readable_terms
from .settings import TOPIC_NAME
from .views import paper_link

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


def reader_page(public_url: str, token: str) -> str:
    """The reader's own web page (their papers, feeds, rules), behind their private token."""
    return f"{public_url}u/{token}"


def topic_page(public_url: str, name: str) -> str:
    return f"{public_url}topics/{name}"


@functools.lru_cache(maxsize=1 << 16)  # a paper is in many feeds, twice in each
def entry_id(key: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "paperboy:paper:" + key))


def dated(digest_date: date | None, first_seen: datetime, line: int) -> datetime:
    """When a feed says a paper came out: on its digest's day (the date line, else the file's
    time), the digest's ranking kept as distinct times (the paper on an earlier line is the
    later, so readers that sort by date keep the order), and never after it was first seen."""
    if digest_date is None:
        return first_seen
    end_of_day = datetime.combine(digest_date, time(23, 59, 59), tzinfo=UTC)
    return min(end_of_day, first_seen) - timedelta(seconds=min(line, 86_399))


@dataclass(frozen=True, slots=True)
class FeedItem:
    key: str
    title: str
    abstract: str
    published: datetime  # :func:`dated`
    terms: tuple[str, ...] = ()  # the rule terms that brought it, as written (shown readable)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    name: str  # path under feeds.dir, without the suffix: ALL, topic_feed(), subscriber_feed()
    title: str
    subtitle: str  # what the feed holds, in words
    page: str = ""  # the web page of the same papers (the feeds' alternate link)


def render(
    spec: FeedSpec,
    items: Sequence[FeedItem],
    *,
    base_url: str,
    link_template: str,
    kinds: Sequence[str] = SUFFIXES,
) -> dict[str, bytes]:
    """The feed as ``{".atom": bytes, ".rss": bytes}`` (the ``kinds`` asked); ``items`` newest first.

    Atom says what its text is (``type="text"``, the default): readers show it as text. RSS
    says nothing, and readers take a description (and often a title) as HTML: there the text
    is HTML-escaped before it is XML-escaped, so ``<script>`` in an abstract reaches the
    reader as the characters ``<script>``, never as markup (and ``<think>`` is not lost)."""
    out = {}
    for suffix, kind in ((".atom", "application/atom+xml"), (".rss", "application/rss+xml")):
        if suffix[1:] not in kinds:
            continue
        fg = _feed(spec, items, base_url=base_url, link_template=link_template, html=suffix == ".rss")
        fg.link(href=base_url + spec.name + suffix, rel="self", type=kind)
        fg.link(href=spec.page or base_url, rel="alternate", type="text/html")  # the last: RSS's <link>
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
        for term in readable_terms(item.terms):
            entry.category(term=term)
    return fg


def write(spec: FeedSpec, files: dict[str, bytes], directory: Path) -> int:
    """Write each rendered file to ``directory/<name><suffix>`` atomically; how many changed."""
    target = directory / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    return sum(atomic_write(target.with_name(target.name + suffix), data) for suffix, data in files.items())


def atomic_write(path: Path, data: bytes) -> bool:
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
