"""What feeds and pages list: the papers each topic matched (``topic_papers``, stored by
matching), and each subscriber's papers (their deliveries), newest digest first. A
forgotten paper is left out of both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from .engine import core, insert_new
from .tables import Delivery, Paper, TopicPaper


@dataclass(frozen=True, slots=True)
class NewTopicPaper:
    topic: str
    paper_id: int
    score: int
    terms: list[str]


def add_topic_papers(*, session: Session, rows: Sequence[NewTopicPaper], at: datetime) -> int:
    if not rows:
        return 0
    values = [
        {"topic": r.topic, "paper_id": r.paper_id, "score": r.score, "terms": r.terms, "created_at": at}
        for r in rows
    ]
    return insert_new(session, TopicPaper, values, ["topic", "paper_id"])


def topic_papers(
    *, session: Session, topic: str, limit: int, offset: int = 0
) -> list[tuple[TopicPaper, Paper]]:
    """The papers that matched ``topic`` (its feed, its page), newest digest first."""
    stmt = (
        select(TopicPaper, Paper)
        .join(Paper, col(Paper.id) == col(TopicPaper.paper_id))
        .where(TopicPaper.topic == topic, col(Paper.forgotten_at).is_(None))
        .order_by(*newest_digest_first(col(TopicPaper.score)))
        .limit(limit)
        .offset(offset)
    )
    return [(t, p) for t, p in session.exec(stmt)]


def topic_paper_count(*, session: Session, topic: str) -> int:
    stmt = (
        sa_select(func.count())
        .select_from(TopicPaper)
        .join(Paper, col(Paper.id) == col(TopicPaper.paper_id))
        .where(col(TopicPaper.topic) == topic, col(Paper.forgotten_at).is_(None))
    )
    return int(core(session).execute(stmt).scalar_one())


def newest_digest_first(score: Any) -> tuple[Any, ...]:
    """A feed's and a page's order: the newest digest first (by its date line, else its file's
    day), then the papers first seen last, the best first within them."""
    return (
        col(Paper.digest_date).desc().nulls_last(),
        col(Paper.first_seen_at).desc(),
        score.desc(),
        col(Paper.id),
    )


def subscriber_papers(
    *, session: Session, subscriber_id: int, limit: int, offset: int = 0
) -> list[tuple[Delivery, Paper]]:
    """Every paper that matched the subscriber (their feed, their page), newest digest first."""
    stmt = (
        select(Delivery, Paper)
        .join(Paper, col(Paper.id) == col(Delivery.paper_id))
        .where(Delivery.subscriber_id == subscriber_id, col(Paper.forgotten_at).is_(None))
        .order_by(*newest_digest_first(col(Delivery.score)))
        .limit(limit)
        .offset(offset)
    )
    return [(d, p) for d, p in session.exec(stmt)]


def subscriber_paper_count(*, session: Session, subscriber_id: int) -> int:
    stmt = (
        sa_select(func.count())
        .select_from(Delivery)
        .join(Paper, col(Paper.id) == col(Delivery.paper_id))
        .where(col(Delivery.subscriber_id) == subscriber_id, col(Paper.forgotten_at).is_(None))
    )
    return int(core(session).execute(stmt).scalar_one())
