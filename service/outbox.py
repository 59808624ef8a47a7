"""The outbox: which (subscriber, paper) pairs are due, and moving them along.

Matching writes one ``deliveries`` row per (subscriber, paper) that matched,
in state ``pending``, with the matched terms and score, before anything is
sent. Delivery then sends each subscriber one email holding all their
pending papers (best first; over ``max_papers`` the rest are counted, linked
to the subscriber's feed and not repeated next time) and marks exactly those
rows ``sent`` as soon as the server accepted the message. A failed send
leaves the rows pending, with the reason, for the next run; a row marked
sent is never sent again.

Papers are matched once, when they are new (``papers.matched_at``); a
subscriber added later receives the papers that arrive after they joined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr

from sqlalchemy import Engine
from sqlmodel import Session

from . import store
from .log import event
from .mailer import SendError, Transport
from .render import Digest, PaperView, Renderer, list_id, message_id, paper_link
from .rules import Index
from .settings import Settings

log = logging.getLogger("paperboy.outbox")

MATCH_BATCH = 500


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
                    if sub is not None and sub.id is not None:
                        rows.append(store.NewDelivery(sub.id, paper.id, m.score, list(m.terms), list(m.via)))
                topic_rows.extend(
                    store.NewTopicPaper(m.owner, paper.id, m.score, list(m.terms)) for m in result.topics
                )
            queued += store.add_deliveries(session=session, deliveries=rows, at=at)
            store.add_topic_papers(session=session, rows=topic_rows, at=at)
            store.mark_matched(session=session, paper_ids=[p.id for p in batch if p.id], at=at)
            papers_done += len(batch)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A rendered digest email and the deliveries it carries."""

    email: str
    message: EmailMessage
    delivery_ids: list[int]
    papers: int


def feed_url(settings: Settings, token: str) -> str:
    return f"{settings.feeds.base_url}u/{token}.atom"


def unsubscribe_urls(settings: Settings, token: str) -> list[str]:
    """The configured unsubscribe URL (if any), then a mailto: to the sender.

    The mailto: reaches the operator, who removes the subscriber from the
    configuration; the token in the subject says who asked.
    """
    urls = []
    if settings.email.unsubscribe_url:
        urls.append(settings.email.unsubscribe_url.format(token=token, title="", key=""))
    sender = parseaddr(settings.email.from_)[1]
    mailto = f"mailto:{sender}?subject=unsubscribe%20{token}"
    if mailto not in urls:
        urls.append(mailto)
    return urls


def paper_limits(settings: Settings) -> dict[str, int]:
    """How many papers each subscriber's email shows: their ``max_papers``, else ``email.max_papers``."""
    return {s.email.lower(): s.max_papers or settings.email.max_papers for s in settings.subscribers}


def next_digest(
    session: Session, sub: store.Subscriber, *, settings: Settings, limit: int, at: datetime
) -> tuple[Digest, list[int]] | None:
    """What ``sub``'s next email holds, or None when nothing is pending."""
    assert sub.id is not None
    pending = store.pending_for(session=session, subscriber_id=sub.id)
    if not pending:
        return None
    shown = pending[:limit]
    views = [
        PaperView.build(
            title=paper.title,
            abstract=paper.abstract,
            link=paper_link(settings.email.paper_link, title=paper.title, key=paper.key),
            terms=delivery.terms,
            score=delivery.score,
            via=delivery.via,
        )
        for delivery, paper in shown
    ]
    ids = [d.id for d, _ in pending if d.id is not None]
    digest = Digest(
        to_email=sub.email,
        to_name=sub.name,
        papers=views,
        more=len(pending) - len(shown),
        feed_url=feed_url(settings, sub.token),
        unsubscribe=unsubscribe_urls(settings, sub.token),
        message_id=message_id(sender=settings.email.from_, token=sub.token, delivery_ids=ids),
        date=at,
    )
    return digest, ids


def prepare(engine: Engine, renderer: Renderer, settings: Settings, *, at: datetime) -> list[Outgoing]:
    """Render every subscriber's next email."""
    out = []
    limits = paper_limits(settings)
    with store.reading(engine) as session:
        for sub in store.subscribers_with_pending(session=session):
            limit = limits.get(sub.email, settings.email.max_papers)
            found = next_digest(session, sub, settings=settings, limit=limit, at=at)
            if found is None:
                continue
            digest, ids = found
            msg = renderer.message(digest, sender=settings.email.from_, list_id=list_id(settings.email.from_))
            out.append(Outgoing(sub.email, msg, ids, len(ids)))
    return out


@dataclass(slots=True)
class DeliveryReport:
    emails: int = 0
    papers: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason)
    not_tried: int = 0


def deliver(
    engine: Engine,
    transport: Transport,
    outgoing: Sequence[Outgoing],
    *,
    workers: int,
    at: datetime,
) -> DeliveryReport:
    """Send ``outgoing`` over ``workers`` connections; record each outcome at once."""
    report = DeliveryReport()
    if outgoing:
        asyncio.run(_send_all(engine, transport, list(outgoing), workers=workers, at=at, report=report))
    return report


async def _send_all(
    engine: Engine,
    transport: Transport,
    outgoing: list[Outgoing],
    *,
    workers: int,
    at: datetime,
    report: DeliveryReport,
) -> None:
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()
    for item in outgoing:
        queue.put_nowait(item)

    async def worker() -> None:
        async with transport.connect() as connection:
            while not queue.empty():
                item = queue.get_nowait()
                try:
                    await connection.send(item.message)
                except SendError as exc:
                    with store.transaction(engine) as session:
                        store.mark_attempt_failed(
                            session=session, delivery_ids=item.delivery_ids, error=str(exc)
                        )
                    report.failed.append((item.email, str(exc)))
                    event(
                        log,
                        "deliver.failed",
                        level=logging.WARNING,
                        to=item.email,
                        reason=str(exc),
                        papers=item.papers,
                        retry="next run",
                    )
                    if exc.network:
                        return  # this connection is gone; what is left stays pending
                    continue
                with store.transaction(engine) as session:
                    store.mark_sent(
                        session=session,
                        delivery_ids=item.delivery_ids,
                        at=at,
                        message_id=str(item.message["Message-ID"]),
                    )
                report.emails += 1
                report.papers += item.papers
                event(
                    log,
                    "deliver.sent",
                    to=item.email,
                    papers=item.papers,
                    message_id=item.message["Message-ID"],
                )

    await asyncio.gather(*(worker() for _ in range(max(1, min(workers, len(outgoing))))))
    report.not_tried = queue.qsize()
