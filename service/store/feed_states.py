"""What each feed is rendered from, in the store.

:func:`feed_sources` sums up, in three aggregate queries, what every feed
shows (the papers, each topic's entries, each subscriber's matches), so the
cycle can tell which feeds changed without reading one entry. Each feed's
mark is a row of ``feed_states`` (:class:`~.tables.FeedState`), keyed by the
feed's path under ``/feeds/``: the web server answers a conditional GET from
one row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy import String, cast, delete, func, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from .engine import chunks, core
from .listings import newest_digest_first
from .tables import Delivery, FeedState, Paper, Subscriber, TopicPaper


@dataclass(frozen=True, slots=True)
class FeedSources:
    """What each feed shows, as numbers that change when its entries do."""

    papers: tuple[int, int]  # newest paper id, papers forgotten
    topics: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (entries, newest id)
    # the subscribers in the configuration: token -> (id, email, name, matches, newest match id)
    subscribers: dict[str, tuple[int, str, str | None, int, int]] = field(default_factory=dict)


def feed_sources(*, session: Session) -> FeedSources:
    conn = core(session)
    newest, forgotten = conn.execute(
        sa_select(func.max(col(Paper.id)), func.count(col(Paper.forgotten_at)))
    ).one()
    topics = conn.execute(
        sa_select(
            col(TopicPaper.topic), func.count(col(TopicPaper.id)), func.max(col(TopicPaper.id))
        ).group_by(col(TopicPaper.topic))
    )
    people = conn.execute(
        sa_select(
            col(Subscriber.token),
            col(Subscriber.id),
            col(Subscriber.email),
            col(Subscriber.name),
            func.count(col(Delivery.id)),
            func.max(col(Delivery.id)),
        )
        .select_from(Subscriber)
        .outerjoin(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Subscriber.active).is_(True))
        .group_by(col(Subscriber.id), col(Subscriber.token), col(Subscriber.email), col(Subscriber.name))
    )
    return FeedSources(
        papers=(int(newest or 0), int(forgotten or 0)),
        topics={t: (int(n), int(top or 0)) for t, n, top in topics},
        subscribers={
            token: (int(sid or 0), email, name, int(n), int(top or 0))
            for token, sid, email, name, n, top in people
        },
    )


def feed_states(*, session: Session) -> dict[str, str]:
    """Every feed's name and the mark it was last rendered from."""
    rows = core(session).execute(sa_select(col(FeedState.name), col(FeedState.mark)))
    return {name: mark for name, mark in rows}


def feed_state(*, session: Session, name: str) -> tuple[str, datetime] | None:
    """One feed's mark and when it last changed: all a conditional GET needs (one row by key)."""
    row = (
        core(session)
        .execute(
            sa_select(col(FeedState.mark), col(FeedState.modified_at)).where(col(FeedState.name) == name)
        )
        .first()
    )
    return None if row is None else (row[0], row[1])


def save_states(*, session: Session, marks: dict[str, str], at: datetime) -> None:
    """Record the feeds' new marks (changed at ``at``), replacing the rows of the same names."""
    if not marks:
        return
    drop_states(session=session, names=list(marks))
    core(session).execute(
        insert(FeedState), [{"name": name, "mark": mark, "modified_at": at} for name, mark in marks.items()]
    )


def drop_states(*, session: Session, names: Sequence[str]) -> None:
    for chunk in chunks(names):
        core(session).execute(delete(FeedState).where(col(FeedState.name).in_(chunk)))


class FeedRow(NamedTuple):
    """A paper as a feed shows it, with the terms that brought it."""

    key: str
    title: str
    abstract: str
    digest_date: date | None
    first_seen_at: datetime
    line: int
    terms: Sequence[str]


def subscriber_feed_rows(
    *, session: Session, subscriber_ids: Sequence[int], limit: int
) -> dict[int, list[FeedRow]]:
    """What each subscriber's feed shows of their papers, in :func:`subscriber_papers`' order,
    for many subscribers in one query: plain rows (the feeds of thousands of readers after
    a digest: no ORM objects, no query per reader).

    The ranking reads ids and terms only; each paper's text is then read once, however
    many readers' feeds show it (a digest's papers are in thousands of feeds: reading the
    abstract with every delivery sorted and copied hundreds of megabytes). Each distinct
    list of terms is decoded once (read as text, the same on both backends)."""
    place = func.row_number().over(
        partition_by=col(Delivery.subscriber_id), order_by=newest_digest_first(col(Delivery.score))
    )
    ranked = (
        sa_select(
            col(Delivery.subscriber_id).label("subscriber_id"),
            col(Delivery.paper_id).label("paper_id"),
            cast(col(Delivery.terms), String).label("terms"),
            place.label("place"),
        )
        .join(Paper, col(Paper.id) == col(Delivery.paper_id))
        .where(col(Delivery.subscriber_id).in_(subscriber_ids), col(Paper.forgotten_at).is_(None))
        .subquery()
    )
    stmt = (
        sa_select(ranked.c.subscriber_id, ranked.c.paper_id, ranked.c.terms)
        .where(ranked.c.place <= limit)
        .order_by(ranked.c.subscriber_id, ranked.c.place)
    )
    picked = core(session).execute(stmt).all()
    papers: dict[int, tuple[str, str, str, date | None, datetime, int]] = {}
    for part in chunks(sorted({paper_id for _, paper_id, _ in picked})):
        shown = sa_select(
            col(Paper.id),
            *(col(c) for c in (Paper.key, Paper.title, Paper.abstract, Paper.digest_date)),
            col(Paper.first_seen_at),
            col(Paper.line),
        ).where(col(Paper.id).in_(part))
        papers.update((paper_id, tuple(rest)) for paper_id, *rest in core(session).execute(shown))  # type: ignore[misc]
    terms: dict[str, tuple[str, ...]] = {}
    out: dict[int, list[FeedRow]] = {sid: [] for sid in subscriber_ids}
    for sid, paper_id, text in picked:
        if text not in terms:
            terms[text] = tuple(json.loads(text))
        out[sid].append(FeedRow(*papers[paper_id], terms[text]))
    return out


def feed_marks(*, session: Session) -> list[int]:
    """A few numbers that change whenever what a feed shows may have changed: new papers,
    forgotten ones, new matches, topic entries added or removed, subscribers added or
    (de)activated. Cheap: aggregates the database answers from its indexes (and one count
    of the forgotten papers)."""
    rows = [
        sa_select(func.max(col(Paper.id)), func.count(col(Paper.forgotten_at))),
        sa_select(func.max(col(Delivery.id))),
        sa_select(func.max(col(TopicPaper.id)), func.count(col(TopicPaper.id))),
        sa_select(func.max(col(Subscriber.id)), func.count(col(Subscriber.id))).where(
            col(Subscriber.active).is_(True)
        ),
    ]
    out: list[int] = []
    for stmt in rows:
        out.extend(int(v or 0) for v in core(session).execute(stmt).one())
    return out
