"""The outbox's state machine, as named queries over ``deliveries``.

pending -> sending (:func:`claim_due`, a lease) -> sent (the sent marks of
:mod:`.marks`); a failed attempt -> pending again or failed
(:func:`mark_failed_attempt`); claimed but not tried -> pending
(:func:`release`); an opt-out or a subscriber leaving the configuration -> cancelled
(:func:`cancel_pending`; :func:`restore_left` when they come back). The
delivery run that drives these is :mod:`service.delivery`; its failure modes
are written down there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    and_,
    case,
    func,
    or_,
    type_coerce,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from ..delivery_states import LEFT
from ..settings.cron import next_fire_utc
from .engine import bulk_insert, chunks, converter, core
from .marks import fold_sent
from .tables import (
    Delivery,
    DeliveryState,
    Subscriber,
    live,
)

# ---------------------------------------------------------------- deliveries


class NewDelivery(NamedTuple):
    """A match to queue (a named tuple: a big match makes hundreds of thousands)."""

    subscriber_id: int
    paper_id: int
    score: int
    terms: Sequence[str]
    via: Sequence[str]


def add_deliveries(*, session: Session, deliveries: Sequence[NewDelivery], at: datetime) -> int:
    """Queue ``deliveries`` as pending (a pair already queued is left as it is).

    They are written in (subscriber, paper) order, so each subscriber's rows
    from one matching pass sit together on a few pages: a claim or a sent
    mark then rewrites those pages, not one page per row. (Matching goes
    paper by paper; in that order a digest's rows were spread over half the
    table, and delivery spent most of its database time writing pages.)
    """
    if not deliveries:
        return 0
    connection = core(session)
    words = converter(connection, col(Delivery.terms), key=tuple)  # a digest's rows share a few lists
    via = converter(connection, col(Delivery.via), key=tuple)
    created = converter(connection, col(Delivery.created_at))(at)
    pending = DeliveryState.PENDING
    return bulk_insert(
        connection,
        Delivery,
        ["subscriber_id", "paper_id", "score", "terms", "via", "state", "created_at", "attempts"],
        [
            (d.subscriber_id, d.paper_id, d.score, words(d.terms), via(d.via), pending, created, 0)
            for d in sorted(deliveries, key=attrgetter("subscriber_id", "paper_id"))
        ],
        skip_conflicts_on=["subscriber_id", "paper_id"],
    )


class OutboxRow(NamedTuple):
    """A delivery on its way into an email.

    A chunk loads thousands of these and shows a few: a named tuple (made in C
    from the driver's row), with the JSON columns as the driver returns them
    until read.
    """

    subscriber_id: int
    id: int
    paper_id: int
    attempts: int
    score: int
    terms_raw: Any
    via_raw: Any

    @property
    def terms(self) -> list[str]:
        return list(_strings(self.terms_raw) if isinstance(self.terms_raw, str) else self.terms_raw)

    @property
    def via(self) -> list[str]:
        return list(_strings(self.via_raw) if isinstance(self.via_raw, str) else self.via_raw)


@functools.lru_cache(maxsize=4096)  # a few term lists recur across thousands of rows
def _strings(raw: str) -> tuple[str, ...]:
    """A JSON list of strings, as the database returned it, decoded."""
    return tuple(json.loads(raw))


_OUTBOX_COLUMNS = (  # in OutboxRow's order
    col(Delivery.subscriber_id),
    col(Delivery.id),
    col(Delivery.paper_id),
    col(Delivery.attempts),
    col(Delivery.score),
    type_coerce(col(Delivery.terms), String),  # decoded when shown
    type_coerce(col(Delivery.via), String),
)


def _by_subscriber(result: Any) -> dict[int, list[OutboxRow]]:
    """The rows of ``result`` (_OUTBOX_COLUMNS) grouped by subscriber, each group by id.

    (Sorted as plain tuples: comparing SQLAlchemy rows goes through Python
    for every comparison, and cost a claim more than its UPDATE.)
    """
    return _by_subscriber_rows(map(OutboxRow._make, result.all()))


def _by_subscriber_rows(rows: Iterable[OutboxRow]) -> dict[int, list[OutboxRow]]:
    out: dict[int, list[OutboxRow]] = {}
    for row in sorted(rows):  # by subscriber, then id
        group = out.get(row.subscriber_id)
        if group is None:
            out[row.subscriber_id] = [row]
        else:
            group.append(row)
    return out


def _due(at: datetime) -> Any:
    """Rows to send now: pending and past their retry time, or sending with an expired lease.

    Written without a top-level OR so that the planner looks a subscriber's
    rows up in the partial index ``ix_deliveries_live`` instead of scanning a state.
    """
    return and_(
        live(),
        case(
            (
                col(Delivery.state) == DeliveryState.PENDING,
                or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= at),
            ),
            else_=col(Delivery.lease_until) < at,
        ),
    )


def claim_due(
    *,
    session: Session,
    at: datetime,
    lease_until: datetime,
    worker: str,
    max_subscribers: int,
    after: int = 0,
) -> tuple[dict[int, list[OutboxRow]], bool]:
    """:func:`claim_subscribers`, then :func:`claimed_rows` in the same transaction: the
    claimed rows by subscriber (each subscriber's by id), and whether anything was due."""
    subscribers, anything = claim_subscribers(
        session=session,
        at=at,
        lease_until=lease_until,
        worker=worker,
        max_subscribers=max_subscribers,
        after=after,
    )
    return claimed_rows(session=session, worker=worker, subscriber_ids=subscribers), anything


def claim_subscribers(
    *,
    session: Session,
    at: datetime,
    lease_until: datetime,
    worker: str,
    max_subscribers: int,
    after: int = 0,
) -> tuple[list[int], bool]:
    """Claim the due deliveries of up to ``max_subscribers`` active subscribers whose id
    is above ``after`` (a run walks the subscribers once, in id order).

    Returns the subscribers claimed, and whether anything was due at all (rows another
    process holds locked are skipped, not waited for: ``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL; SQLite's BEGIN IMMEDIATE lets one writer at a time in). The rows become
    ``sending``, leased to ``worker`` until ``lease_until``; read them with
    :func:`claimed_rows` once the claim is committed. (Returning them from the UPDATE
    kept SQLite's write lock while Python took each row: with the sending and
    composing threads busy, each row waited for the interpreter, a claim of 1,600 rows
    held the lock for 1.3 s, and the thread recording sent emails starved.)
    """
    fold_sent(session=session)  # an email a dead process sent must not look due again
    due_rows = (
        select(Delivery.id)
        .where(col(Delivery.subscriber_id) == Subscriber.id, _due(at))
        .correlate(Subscriber)
        .exists()
    )
    # A subscriber with a schedule of their own waits for it to fire, unless a send of theirs
    # failed or was cut short: that is retried as anyone's is.
    unfinished = (
        select(Delivery.id)
        .where(
            col(Delivery.subscriber_id) == Subscriber.id,
            _due(at),
            or_(col(Delivery.attempts) > 0, col(Delivery.state) == DeliveryState.SENDING),
        )
        .correlate(Subscriber)
        .exists()
    )
    in_season = or_(col(Subscriber.next_email_at).is_(None), col(Subscriber.next_email_at) <= at, unfinished)
    # Walk the subscribers in id order and look each one's rows up in the partial
    # index ix_deliveries_live: a chunk costs the same however long the outbox is.
    subscribers = [
        int(sid or 0)
        for sid in session.exec(
            select(Subscriber.id)
            .where(
                Subscriber.active == True,  # noqa: E712
                col(Subscriber.unsubscribed_at).is_(None),
                col(Subscriber.id) > after,
                due_rows,
                in_season,
            )
            .order_by(col(Subscriber.id))
            .limit(max_subscribers)
            # A subscriber is claimed whole, by one process: another one claiming at the same
            # time skips them (PostgreSQL; NO KEY: the leader's new deliveries still go in).
            .with_for_update(skip_locked=True, key_share=True)
        )
    ]
    if not subscribers:
        return [], False
    rows = (
        select(Delivery.id)
        .where(_due(at), col(Delivery.subscriber_id).in_(subscribers))
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
    )
    claim = (
        update(Delivery)
        .where(col(Delivery.id).in_(rows.scalar_subquery()))
        .values(state=DeliveryState.SENDING, lease_until=lease_until, claimed_by=worker)
    )
    core(session).execute(claim)
    _next_season(session, subscribers, at)
    return subscribers, True


def _next_season(session: Session, subscribers: list[int], at: datetime) -> None:
    """The claimed subscribers with a schedule of their own wait for its next fire after ``at``."""
    rows = core(session).execute(
        sa_select(col(Subscriber.id), col(Subscriber.schedule), col(Subscriber.timezone)).where(
            col(Subscriber.id).in_(subscribers), col(Subscriber.schedule).is_not(None)
        )
    )
    by_cadence: dict[tuple[str, str], list[int]] = {}
    for sid, line, zone in rows:
        by_cadence.setdefault((str(line), zone or "UTC"), []).append(int(sid or 0))
    for (line, zone), ids in by_cadence.items():
        core(session).execute(
            update(Subscriber)
            .where(col(Subscriber.id).in_(ids))
            .values(next_email_at=next_fire_utc(line, zone, at))
        )


def claimed_rows(
    *, session: Session, worker: str, subscriber_ids: Sequence[int]
) -> dict[int, list[OutboxRow]]:
    """The rows ``worker`` holds (``sending``) for ``subscriber_ids``, by subscriber, each
    subscriber's by id: what its claim took (a run claims each subscriber once)."""
    if not subscriber_ids:
        return {}
    mine = (
        col(Delivery.subscriber_id).in_(subscriber_ids),
        live(),
        col(Delivery.state) == DeliveryState.SENDING,
        col(Delivery.claimed_by) == worker,
    )
    conn = core(session)
    if conn.dialect.name != "sqlite":
        return _by_subscriber(conn.execute(sa_select(*_OUTBOX_COLUMNS).where(*mine)))
    # SQLite hands a result over row by row, and Python's sqlite3 lets go of the interpreter
    # for each: with the sending and composing threads busy, every row waited up to a switch
    # interval for it (1,600 rows: 1.3 s). One row holding them all as JSON takes one step.
    packed = sa_select(func.json_group_array(func.json_array(*_OUTBOX_COLUMNS))).where(*mine)
    rows = json.loads(conn.execute(packed).scalar_one() or "[]")
    return _by_subscriber_rows(OutboxRow(*row) for row in rows)


def outbox_rows(*, session: Session, subscriber_ids: Sequence[int]) -> dict[int, list[OutboxRow]]:
    """The pending rows of ``subscriber_ids``, by subscriber, in one query (``preview``)."""
    stmt = sa_select(*_OUTBOX_COLUMNS).where(
        col(Delivery.subscriber_id).in_(subscriber_ids),
        live(),
        col(Delivery.state) == DeliveryState.PENDING,
    )
    return _by_subscriber(core(session).execute(stmt))


def _mine(delivery_ids: Sequence[int], worker: str) -> Any:
    return update(Delivery).where(
        col(Delivery.id).in_(delivery_ids),
        col(Delivery.state) == DeliveryState.SENDING,
        col(Delivery.claimed_by) == worker,
    )


def mark_failed_attempt(
    *,
    session: Session,
    delivery_ids: Sequence[int],
    worker: str,
    error: str,
    permanent: bool,
    retry_at: datetime,
    max_attempts: int,
) -> None:
    """A send failed: ``sending -> pending`` (due again at ``retry_at``), or ``-> failed``
    when the error is permanent or this was the last of ``max_attempts``."""
    attempts = col(Delivery.attempts) + 1
    state: Any = (
        DeliveryState.FAILED
        if permanent
        else case((attempts >= max_attempts, DeliveryState.FAILED), else_=DeliveryState.PENDING)
    )
    core(session).execute(
        _mine(delivery_ids, worker).values(
            state=state,
            attempts=attempts,
            last_error=error[:500],
            next_attempt_at=None if permanent else retry_at,
            lease_until=None,
            claimed_by=None,
        )
    )


def release(*, session: Session, delivery_ids: Sequence[int], worker: str) -> None:
    """Claimed but not tried (the run stopped): back to pending, no attempt counted."""
    core(session).execute(
        _mine(delivery_ids, worker).values(state=DeliveryState.PENDING, lease_until=None, claimed_by=None)
    )


def cancel_pending(*, session: Session, subscriber_ids: Sequence[int], reason: str) -> int:
    """``pending -> cancelled`` for every row of the subscribers still waiting (an opt-out,
    or they left the configuration); how many. Rows being sent right now finish as they are."""
    done = 0
    for chunk in chunks(subscriber_ids):
        result = core(session).execute(
            update(Delivery)
            .where(
                col(Delivery.subscriber_id).in_(chunk),
                live(),
                col(Delivery.state) == DeliveryState.PENDING,
            )
            .values(state=DeliveryState.CANCELLED, last_error=reason, next_attempt_at=None)
        )
        done += int(result.rowcount)
    return done


def restore_left(*, session: Session, subscriber_ids: Sequence[int]) -> int:
    """``cancelled -> pending`` for the rows cancelled when the subscribers left the
    configuration (they came back); how many."""
    done = 0
    for chunk in chunks(subscriber_ids):
        result = core(session).execute(
            update(Delivery)
            .where(
                col(Delivery.subscriber_id).in_(chunk),
                col(Delivery.state) == DeliveryState.CANCELLED,
                col(Delivery.last_error) == LEFT,
            )
            .values(state=DeliveryState.PENDING, last_error=None, next_attempt_at=None)
        )
        done += int(result.rowcount)
    return done


def find_delivery(*, session: Session, subscriber_id: int, paper_id: int) -> Delivery | None:
    stmt = select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.paper_id == paper_id)
    return session.exec(stmt).first()
