"""Rendered feeds in the store, and what each feed is rendered from.

:func:`feed_sources` sums up, in three aggregate queries, what every feed
shows (the papers, each topic's entries, each subscriber's matches), so the
cycle can tell which feeds changed without reading one entry. The rendered
bytes are rows of ``feed_docs`` (:class:`~.tables.FeedDoc`), keyed by the
feed's path under ``/feeds/``: the web server answers a request from one row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from .engine import core
from .tables import Delivery, FeedDoc, Paper, Subscriber, TopicPaper

BATCH = 500  # names per IN (...) list


@dataclass(frozen=True, slots=True)
class FeedSources:
    """What each feed shows, as numbers that change when its entries do."""

    papers: tuple[int, int]  # newest paper id, papers forgotten
    topics: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (entries, newest id)
    # the subscribers in the configuration: token -> (name, matches, newest match id)
    subscribers: dict[str, tuple[str | None, int, int]] = field(default_factory=dict)


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
            col(Subscriber.name),
            func.count(col(Delivery.id)),
            func.max(col(Delivery.id)),
        )
        .select_from(Subscriber)
        .outerjoin(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Subscriber.active).is_(True))
        .group_by(col(Subscriber.id), col(Subscriber.token), col(Subscriber.name))
    )
    return FeedSources(
        papers=(int(newest or 0), int(forgotten or 0)),
        topics={t: (int(n), int(top or 0)) for t, n, top in topics},
        subscribers={token: (name, int(n), int(top or 0)) for token, name, n, top in people},
    )


def doc_marks(*, session: Session) -> dict[str, str]:
    """Every stored feed's name and the mark it was rendered from."""
    rows = core(session).execute(sa_select(col(FeedDoc.name), col(FeedDoc.mark)))
    return {name: mark for name, mark in rows}


@dataclass(frozen=True, slots=True)
class NewDoc:
    name: str
    mark: str
    etag: str
    modified_at: datetime
    body: bytes


def save_docs(*, session: Session, docs: Sequence[NewDoc]) -> None:
    """Store rendered feeds, replacing the rows of the same names."""
    if not docs:
        return
    drop_docs(session=session, names=[d.name for d in docs])
    core(session).execute(
        insert(FeedDoc),
        [
            {"name": d.name, "mark": d.mark, "etag": d.etag, "modified_at": d.modified_at, "body": d.body}
            for d in docs
        ],
    )


def drop_docs(*, session: Session, names: Sequence[str]) -> None:
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        core(session).execute(delete(FeedDoc).where(col(FeedDoc.name).in_(chunk)))


def doc_head(*, session: Session, name: str) -> tuple[str, datetime] | None:
    """A stored feed's ETag and when it last changed, without its body (a conditional GET)."""
    row = (
        core(session)
        .execute(sa_select(col(FeedDoc.etag), col(FeedDoc.modified_at)).where(col(FeedDoc.name) == name))
        .first()
    )
    return None if row is None else (row[0], row[1])


def doc_body(*, session: Session, name: str) -> tuple[str, datetime, bytes] | None:
    """A stored feed's ETag, when it last changed, and its bytes."""
    row = (
        core(session)
        .execute(
            sa_select(col(FeedDoc.etag), col(FeedDoc.modified_at), col(FeedDoc.body)).where(
                col(FeedDoc.name) == name
            )
        )
        .first()
    )
    return None if row is None else (row[0], row[1], bytes(row[2]))


def doc_bodies(*, session: Session) -> Iterator[tuple[str, bytes]]:
    """Every stored feed's name and bytes, streamed (to mirror them into a folder)."""
    result = (
        core(session)
        .execution_options(yield_per=200)
        .execute(sa_select(col(FeedDoc.name), col(FeedDoc.body)))
    )
    for name, body in result:
        yield name, bytes(body)
