"""Matching: the papers not matched yet, against every rule, into the outbox.

Each new paper is read once by the index (:class:`service.rules.Index`),
which says every subscriber and topic that gets it and why. A subscriber's
match becomes a ``deliveries`` row (``pending``, with its terms, score and
what brought it) before anything is sent: the outbox. A topic's match
becomes a ``topic_papers`` row: the topic's public feed.

Papers are matched once, when they are new (``papers.matched_at``); a
subscriber added later receives the papers that arrive after they joined.
A subscriber who unsubscribed gets no new rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from . import store
from .rules import Index

MATCH_BATCH = 500  # papers per transaction


def match_new(engine: Engine, index: Index, *, at: datetime) -> tuple[int, int]:
    """Match every paper not matched yet; returns (papers matched, deliveries queued)."""
    papers_done = queued = 0
    while True:
        with store.transaction(engine) as session:
            active = store.active_subscribers(session=session)
            batch = store.unmatched_papers(session=session, limit=MATCH_BATCH)
            if not batch:
                return papers_done, queued
            rows: list[store.NewDelivery] = []
            topic_rows: list[store.NewTopicPaper] = []
            for paper in batch:
                assert paper.id is not None
                result = index.match(paper.title, paper.abstract)
                for m in result.subscribers:
                    sub = active.get(m.owner)
                    if sub is not None and sub.id is not None and sub.unsubscribed_at is None:
                        rows.append(store.NewDelivery(sub.id, paper.id, m.score, list(m.terms), list(m.via)))
                topic_rows.extend(
                    store.NewTopicPaper(m.owner, paper.id, m.score, list(m.terms)) for m in result.topics
                )
            queued += store.add_deliveries(session=session, deliveries=rows, at=at)
            store.add_topic_papers(session=session, rows=topic_rows, at=at)
            store.mark_matched(session=session, paper_ids=[p.id for p in batch if p.id], at=at)
            papers_done += len(batch)
