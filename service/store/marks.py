"""Sent marks: what the server accepted, recorded at once and folded into the outbox later.

A delivery run writes one ``sent_marks`` row per accepted email the moment the
server says 250 (:func:`record_sent`, a one-row insert per email, gathered into
group commits); :func:`fold_sent` then moves the rows each mark stands for
from ``sending`` to ``sent`` for many emails at once, and every claim folds
first, so a mark left by a process that died still counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, update
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from .engine import core
from .tables import Delivery, DeliveryState, SentMark, live


@dataclass(frozen=True, slots=True)
class NewSentMark:
    subscriber_id: int
    message_id: str
    sent_at: datetime
    deliveries: int


def record_sent(*, session: Session | Connection, worker: str, marks: Sequence[NewSentMark]) -> None:
    """Insert ``worker``'s sent marks, one row per accepted email, in one statement."""
    if marks:
        core(session).execute(
            sa_insert(SentMark),
            [
                {
                    "worker": worker,
                    "subscriber_id": m.subscriber_id,
                    "message_id": m.message_id,
                    "sent_at": m.sent_at,
                    "deliveries": m.deliveries,
                }
                for m in marks
            ],
        )


@dataclass(frozen=True, slots=True)
class FoldReport:
    emails: int
    rows: int
    lost: list[tuple[int, int]]  # (subscriber id, rows) no longer ours: the lease ran out first


def fold_sent(*, session: Session, worker: str | None = None) -> FoldReport:
    """Apply the sent marks (``worker``'s, or everyone's): ``sending -> sent`` for the rows
    each stands for, in one transaction; the marks are then deleted."""
    stmt = (
        sa_select(
            col(SentMark.id), col(SentMark.subscriber_id), col(SentMark.message_id), col(SentMark.deliveries)
        )
        .order_by(col(SentMark.id))
        .with_for_update(skip_locked=True)  # one folder each
    )
    if worker is not None:
        stmt = stmt.where(col(SentMark.worker) == worker)
    marks = list(core(session).execute(stmt))
    if not marks:
        return FoldReport(0, 0, [])
    ids = [m.id for m in marks]
    result = core(session).execute(  # one UPDATE ... FROM for all of them
        update(Delivery)
        .where(
            col(Delivery.subscriber_id) == col(SentMark.subscriber_id),
            col(Delivery.claimed_by) == col(SentMark.worker),
            live(),
            col(Delivery.state) == DeliveryState.SENDING,
            col(SentMark.id).in_(ids),
        )
        .values(
            state=DeliveryState.SENT,
            sent_at=col(SentMark.sent_at),
            message_id=col(SentMark.message_id),
            attempts=Delivery.attempts + 1,
            lease_until=None,
            claimed_by=None,
            last_error=None,
        )
    )
    rows = int(result.rowcount)
    lost: list[tuple[int, int]] = []
    if rows < sum(m.deliveries for m in marks):  # some lease ran out first: say whose
        for mark in marks:
            done = session.exec(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.subscriber_id == mark.subscriber_id,
                    Delivery.message_id == mark.message_id,
                    col(Delivery.state) == DeliveryState.SENT,
                )
            ).one()
            if done < mark.deliveries:
                lost.append((mark.subscriber_id, mark.deliveries - int(done)))
    core(session).execute(delete(SentMark).where(col(SentMark.id).in_(ids)))
    return FoldReport(len(marks), rows, lost)
