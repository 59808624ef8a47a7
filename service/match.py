"""Matching: papers against every rule, into the outbox.

Each new paper is read once by the index (:class:`service.rules.Index`),
which says every subscriber and topic that gets it and why. A subscriber's
match becomes a ``deliveries`` row (``pending``, with its terms, score and
what brought it) before anything is sent: the outbox. A topic's match
becomes a ``topic_papers`` row: the topic's public feed.

Papers are matched once, when they are new (``papers.matched_at``). A
subscriber or topic that is added later, or whose rules change, is
*backfilled*: the papers first seen in the last ``backfill`` days are matched
against its rules alone when the change is first seen (the rules of each are
kept as a fingerprint in the store, ``rule_fingerprints``), and ``paperboy
rematch`` does the same on demand. A pair already queued is never queued
again (the store refuses a second row per pair), and a subscriber who
unsubscribed gets no new rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from . import store
from .rules import Index
from .settings import Settings

MATCH_BATCH = 500  # papers per transaction


class Matcher:
    """Matches papers and queues what they match, in the caller's transaction: for
    :func:`service.ingest.ingest_file`, which stores and matches a file's papers in one pass,
    and for :func:`match_new`. The index (``index()``) and the subscribers who receive new
    papers are read at the first paper, so a run with nothing new needs neither."""

    def __init__(self, index: Callable[[], Index], *, at: datetime) -> None:
        self._index = index
        self._at = at
        self._receiving: dict[str, int] | None = None

    def __call__(self, session: Session, papers: list[store.PaperText]) -> int:
        """Match ``papers``; how many deliveries were queued."""
        if not papers:
            return 0
        index = self._index()
        if not index.owners:  # nobody to match for (a store filled before anyone subscribes)
            return 0
        if self._receiving is None:
            self._receiving = store.receiving(session=session)
        return _queue(session, index, papers, self._receiving, topics=None, at=self._at)[0]


def match_new(engine: Engine, index: Callable[[], Index], *, at: datetime) -> tuple[int, int]:
    """Match every paper not matched yet (stored without a :class:`Matcher`, or by an older
    paperboy); returns (papers matched, deliveries queued). With none (a quiet poll), neither
    the index (``index()``) nor a subscriber row is needed."""
    papers_done = queued = after = 0
    matcher = Matcher(index, at=at)
    while True:
        with store.transaction(engine) as session:
            batch = store.unmatched_papers(session=session, limit=MATCH_BATCH, after=after)
            if not batch:
                return papers_done, queued
            queued += matcher(session, batch)
            store.mark_matched(session=session, paper_ids=[p.id for p in batch], at=at)
            papers_done += len(batch)
            after = batch[-1].id


QUEUE_ROWS = 20_000  # matches held before they are stored: memory stays flat however many match


def _queue(
    session: Session,
    index: Index,
    papers: list[store.PaperText],
    receiving: dict[str, int],
    *,
    topics: Collection[str] | None,
    at: datetime,
) -> tuple[int, int]:
    """Match ``papers`` and queue what matched (of ``topics`` only, when given): (deliveries
    queued, topic entries added). ``receiving``: the subscribers who get new papers, by address."""
    rows: list[store.NewDelivery] = []
    topic_rows: list[store.NewTopicPaper] = []
    queued = 0
    for paper in papers:
        result = index.match(paper.title, paper.abstract)
        for m in result.subscribers:
            sub_id = receiving.get(m.owner)
            if sub_id is not None:
                rows.append(store.NewDelivery(sub_id, paper.id, m.score, m.terms, m.via))
        topic_rows.extend(
            store.NewTopicPaper(m.owner, paper.id, m.score, list(m.terms))
            for m in result.topics
            if topics is None or m.owner in topics
        )
        if len(rows) >= QUEUE_ROWS:
            queued += store.add_deliveries(session=session, deliveries=rows, at=at)
            rows = []
    queued += store.add_deliveries(session=session, deliveries=rows, at=at)
    return queued, store.add_topic_papers(session=session, rows=topic_rows, at=at)


# ---------------------------------------------------------------- backfill


def subscriber_owner(email: str) -> str:
    return f"subscriber:{email.lower()}"


def topic_owner(name: str) -> str:
    return f"topic:{name}"


def fingerprints(settings: Settings) -> dict[str, str]:
    """Each subscriber's and topic's rules as a hash (a subscriber's includes its topics' rules,
    so a changed topic counts as a change for everyone who follows it)."""

    def digest(value: object) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]

    topics = {name: digest([t.keywords, t.exclude, t.query]) for name, t in sorted(settings.topics.items())}
    out = {topic_owner(name): h for name, h in topics.items()}
    for s in settings.subscribers:
        followed = sorted(s.topics)
        out[subscriber_owner(s.email)] = digest(
            [s.keywords, s.exclude, s.query, followed, [topics.get(t) for t in followed]]
        )
    return out


@dataclass(frozen=True, slots=True)
class Backfill:
    owners: int  # subscribers and topics rematched
    papers: int  # papers of the window
    queued: int  # deliveries queued
    topic_entries: int


def rematch(
    engine: Engine,
    settings: Settings,
    *,
    owners: Collection[str] | None,
    days: float,
    at: datetime,
    prints: dict[str, str] | None = None,
) -> Backfill:
    """Match the papers first seen in the last ``days`` days against the rules of ``owners``
    (``subscriber:<email>``, ``topic:<name>``; None: everyone) and queue what is not queued
    yet. The fingerprints of the owners rematched are recorded (``prints``: the
    configuration's, when the caller has them already)."""
    from .rulebook import build_index

    prints = fingerprints(settings) if prints is None else prints
    chosen = set(prints) if owners is None else set(owners) & set(prints)
    subs = [s for s in settings.subscribers if subscriber_owner(s.email) in chosen]
    topics = {name for name in settings.topics if topic_owner(name) in chosen}
    papers = queued = entries = 0
    if days > 0 and (subs or topics):
        index: Index | None = None  # built at the first paper: a new store has none to rematch
        receiving: dict[str, int] = {}
        since, after = at - timedelta(days=days), 0
        while True:
            with store.transaction(engine) as session:
                batch = store.papers_since(session=session, since=since, after=after, limit=MATCH_BATCH)
                if not batch:
                    break
                if index is None:
                    index = build_index(settings, subs)
                    receiving = store.receiving(session=session)  # read once, not per batch
                q, t = _queue(session, index, batch, receiving, topics=topics, at=at)
                queued, entries, papers = queued + q, entries + t, papers + len(batch)
                after = max(p.id for p in batch)
    with store.transaction(engine) as session:
        store.record_fingerprints(session=session, prints={o: prints[o] for o in chosen}, at=at)
    return Backfill(len(chosen), papers, queued, entries)


def changed_owners(engine: Engine, prints: dict[str, str]) -> set[str]:
    """The subscribers and topics whose rules (``prints``, :func:`fingerprints`) the store has
    not matched yet: new or edited."""
    with store.reading(engine) as session:
        known = store.fingerprints(session=session)
    return {owner for owner, h in prints.items() if known.get(owner) != h}


def rules_known(engine: Engine, whole: str) -> bool:
    """Whether the store has matched everyone's rules as they are now (``whole``,
    :attr:`Settings.rules_digest`), from one row: a run with the last run's rules reads no subscriber's."""
    with store.reading(engine) as session:
        known = store.fingerprints(session=session, owner=store.ALL_RULES)
    return known.get(store.ALL_RULES) == whole


def rules_matched(engine: Engine, whole: str, at: datetime) -> None:
    """Record that everyone's rules (``whole``, :attr:`Settings.rules_digest`) have been matched."""
    with store.transaction(engine) as session:
        store.record_fingerprints(session=session, prints={store.ALL_RULES: whole}, at=at)
