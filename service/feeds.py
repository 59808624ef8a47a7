"""Atom and RSS 2.0 feeds (feedgen), written atomically.

Files under ``feeds.dir``:

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

import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from feedgen.feed import FeedGenerator

from .render import paper_link

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    name: str  # path under feeds.dir, without the suffix: "all", "topics/<name>", "u/<token>"
    title: str
    subtitle: str


def render(
    spec: FeedSpec, items: Sequence[FeedItem], *, base_url: str, link_template: str
) -> dict[str, bytes]:
    """The feed as ``{".atom": bytes, ".rss": bytes}``; ``items`` newest first."""
    fg = FeedGenerator()
    self_url = base_url + spec.name
    newest = max((i.published for i in items), default=_EPOCH)
    fg.id(entry_id("feed:" + spec.name))
    fg.title(spec.title)
    fg.subtitle(spec.subtitle)  # also the RSS <description>
    fg.author({"name": "paperboy"})
    fg.generator("paperboy")
    fg.language("en")
    fg.updated(newest)
    fg.lastBuildDate(newest)
    for item in items:
        entry = fg.add_entry(order="append")
        entry.id(entry_id(item.key))
        entry.guid(entry_id(item.key), permalink=False)
        entry.title(item.title)
        entry.link(href=paper_link(link_template, title=item.title, key=item.key))
        entry.summary(item.abstract)
        entry.published(item.published)
        entry.updated(item.published)
        for term in item.terms:
            entry.category(term=term)
    out = {}
    for suffix, kind, serialize in (
        (".atom", "application/atom+xml", fg.atom_str),
        (".rss", "application/rss+xml", fg.rss_str),
    ):
        fg.link(href=base_url, rel="alternate", replace=True)
        fg.link(href=self_url + suffix, rel="self", type=kind)
        out[suffix] = serialize(pretty=True)
    return out


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
