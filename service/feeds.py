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
import itertools
import logging
import os
import re
import tempfile
import threading
import uuid
from collections import OrderedDict
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
    for suffix in (".atom", ".rss"):
        if suffix[1:] in kinds:
            frame = _frame(spec, items, base_url=base_url, link_template=link_template, suffix=suffix)
            entries = _entries(items, link_template, suffix)
            cut = frame.rindex(_CLOSE[suffix])
            out[suffix] = frame[:cut] + entries + frame[cut:]
    return out


def render_whole(
    spec: FeedSpec, items: Sequence[FeedItem], *, base_url: str, link_template: str, suffix: str
) -> bytes:
    """The feed as feedgen writes it in one piece: what :func:`render` puts together from
    a feed without entries and each entry made once (the tests hold them to the same bytes)."""
    return _frame(spec, items, base_url=base_url, link_template=link_template, suffix=suffix, entries=True)


# Where the entries go: feedgen appends them after everything else of the feed (the channel)
_CLOSE = {".atom": b"</feed>\n", ".rss": b"  </channel>\n"}
_OPEN = {".atom": b"  <entry>\n", ".rss": b"    <item>\n"}
_PLACE = "paperboy:categories"  # a category no rule can name: where the entry's own go


def _frame(
    spec: FeedSpec,
    items: Sequence[FeedItem],
    *,
    base_url: str,
    link_template: str,
    suffix: str,
    entries: bool = False,
) -> bytes:
    kind = "application/atom+xml" if suffix == ".atom" else "application/rss+xml"
    fg = _feed(
        spec, items, base_url=base_url, link_template=link_template, html=suffix == ".rss", entries=entries
    )
    fg.link(href=base_url + spec.name + suffix, rel="self", type=kind)
    fg.link(href=spec.page or base_url, rel="alternate", type="text/html")  # the last: RSS's <link>
    return fg.atom_str(pretty=True) if suffix == ".atom" else fg.rss_str(pretty=True)


Paper = tuple[str, str, str, datetime]  # what a paper's entry shows: key, title, abstract, date
_KEEP = 1 << 12  # papers' entries kept (both formats of a few digests of papers)
_made: OrderedDict[tuple[Paper, str, str], tuple[bytes, bytes]] = OrderedDict()
_made_lock = threading.Lock()  # the web server renders feeds on several threads


def _entries(items: Sequence[FeedItem], link_template: str, suffix: str) -> bytes:
    """The entries as feedgen writes them inside a feed: each paper's part made once for
    every feed it is in (a paper is in hundreds of readers' feeds), the reader's terms added."""
    papers = [(i.key, i.title, i.abstract, i.published) for i in items]
    found: dict[Paper, tuple[bytes, bytes]] = {}
    with _made_lock:
        for paper in dict.fromkeys(papers):
            half = _made.get((paper, link_template, suffix))
            if half is not None:
                _made.move_to_end((paper, link_template, suffix))
                found[paper] = half
    missing = [p for p in dict.fromkeys(papers) if p not in found]
    if missing:
        found.update(zip(missing, _paper_entries(missing, link_template, suffix), strict=True))
        with _made_lock:
            _made.update(((p, link_template, suffix), found[p]) for p in missing)
            while len(_made) > _KEEP:
                _made.popitem(last=False)
    return b"".join(
        found[paper][0] + b"".join(_category(t, suffix) for t in readable_terms(item.terms)) + found[paper][1]
        for item, paper in zip(items, papers, strict=True)
    )


def _paper_entries(papers: Sequence[Paper], link_template: str, suffix: str) -> list[tuple[bytes, bytes]]:
    """Each paper's entry, in two halves around where its categories go: feedgen writes
    them all in one feed, cut at each entry (text never holds a bare ``<``, so each tag
    found is a tag)."""
    items = [FeedItem(*paper, (_PLACE,)) for paper in papers]
    whole = _frame(
        FeedSpec(ALL, "-", "-"),
        items,
        base_url="http://x/",
        link_template=link_template,
        suffix=suffix,
        entries=True,
    )
    starts = [m.start() for m in re.finditer(re.escape(_OPEN[suffix]), whole)]
    starts.append(whole.rindex(_CLOSE[suffix]))
    line = _category(_PLACE, suffix)
    out = []
    for start, end in itertools.pairwise(starts):
        entry = whole[start:end]
        cut = entry.index(line)
        out.append((entry[:cut], entry[cut + len(line) :]))
    return out


def clear_entries() -> None:
    """Forget every entry made (the benchmark's cold render)."""
    with _made_lock:
        _made.clear()
    _category.cache_clear()


@functools.lru_cache(maxsize=4096)
def _category(term: str, suffix: str) -> bytes:
    """An entry's category line, serialized as feedgen's lxml writes it."""
    from lxml import etree

    if suffix == ".atom":
        element = etree.Element("category", term=term)
        return b"    " + etree.tostring(element, encoding="UTF-8") + b"\n"
    element = etree.Element("category")
    element.text = term
    return b"      " + etree.tostring(element, encoding="UTF-8") + b"\n"


def _feed(
    spec: FeedSpec, items: Sequence[FeedItem], *, base_url: str, link_template: str, html: bool, entries: bool
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
    for item in items if entries else ():
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


class Mirror:
    """Feed files written into ``directory`` as a batch: each to a temporary file beside it
    (:meth:`stage`), then, at :meth:`commit`, all flushed to disk at once (the folder's file
    system only, where the system allows) and each renamed over its old file. A reader sees
    the old file or the new one, never half of one, and no new file replaces an old one
    before it is on disk; one flush for the batch, not one per file (creating files between
    flushes costs a journal commit each)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._staged: list[tuple[str, Path]] = []

    def stage(self, spec: FeedSpec, files: dict[str, bytes]) -> int:
        """Stage each rendered file of ``spec``; how many differ from the files there now."""
        target = self.directory / spec.name
        target.parent.mkdir(parents=True, exist_ok=True)
        return sum(self.stage_file(target.with_name(target.name + s), data) for s, data in files.items())

    def stage_file(self, path: Path, data: bytes) -> bool:
        """Stage ``data`` for ``path``; False when the file there holds it already (it is
        kept as it is, its mtime too)."""
        try:
            same_size = path.stat().st_size == len(data)
        except FileNotFoundError:
            same_size = False
        if same_size and path.read_bytes() == data:  # a changed feed is read only if its size is the same
            return False
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
        self._staged.append((tmp, path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        return True

    def commit(self) -> None:
        if self._staged:
            _flush(self.directory)
        for tmp, path in self._staged:
            os.replace(tmp, path)
        self._staged.clear()

    def abort(self) -> None:
        """Remove what was staged and not committed (a batch that broke off)."""
        for tmp, _ in self._staged:
            Path(tmp).unlink(missing_ok=True)
        self._staged.clear()


def _flush(directory: Path) -> None:
    """Everything written to the file system of ``directory`` on disk: syncfs(2) where the C
    library has it (Linux), so a host's other disks are left alone; else sync(2)."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


@functools.lru_cache(maxsize=1)
def _libc() -> object:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def atomic_write(path: Path, data: bytes) -> bool:
    """One file written as :class:`Mirror` writes a batch; whether it changed."""
    mirror = Mirror(path.parent)
    try:
        changed = mirror.stage_file(path, data)
        mirror.commit()
        return changed
    finally:
        mirror.abort()
