"""Job runs and the counts ``status``, ``/healthz`` and ``/metrics`` read."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    case,
    delete,
    func,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from .tables import (
    LEFT,
    Delivery,
    DeliveryState,
    IngestedFile,
    JobRun,
    Paper,
    Subscriber,
)

# ---------------------------------------------------------------- status


def counts(*, session: Session) -> dict[str, Any]:
    papers = session.exec(select(func.count()).select_from(Paper)).one()
    files = session.exec(
        select(func.count()).select_from(IngestedFile).where(col(IngestedFile.error).is_(None))
    ).one()
    by_state = dict.fromkeys(DeliveryState.ALL, 0)
    for state, n in session.exec(select(Delivery.state, func.count()).group_by(Delivery.state)):
        by_state[state] = n
    subscribers = session.exec(
        select(func.count()).select_from(Subscriber).where(Subscriber.active == True)  # noqa: E712
    ).one()
    unsubscribed = session.exec(
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.active == True, col(Subscriber.unsubscribed_at).is_not(None))  # noqa: E712
    ).one()
    unmatched = session.exec(
        select(func.count()).select_from(Paper).where(col(Paper.matched_at).is_(None))
    ).one()
    last = session.exec(select(func.max(IngestedFile.ingested_at))).one()
    left = session.exec(
        select(func.count()).select_from(Subscriber).where(Subscriber.active == False)  # noqa: E712
    ).one()
    cancelled_left = session.exec(
        select(func.count())
        .select_from(Delivery)
        .where(col(Delivery.state) == DeliveryState.CANCELLED, col(Delivery.last_error) == LEFT)
    ).one()
    return {
        "papers": int(papers),
        "files": int(files),
        "subscribers": int(subscribers),
        "unsubscribed": int(unsubscribed),
        "left_configuration": int(left),
        "cancelled_left": int(cancelled_left),
        "unmatched_papers": int(unmatched),
        "deliveries": by_state,
        "last_ingest": last.isoformat() if isinstance(last, datetime) else None,
        "forgotten_papers": int(
            session.exec(
                select(func.count()).select_from(Paper).where(col(Paper.forgotten_at).is_not(None))
            ).one()
        ),
    }


# ---------------------------------------------------------------- job runs


RUNS_KEPT_DAYS = 90


def record_run(*, session: Session, run: JobRun) -> None:
    """Keep the run, and forget runs older than ``RUNS_KEPT_DAYS``."""
    session.add(run)
    session.execute(
        delete(JobRun).where(col(JobRun.started_at) < run.started_at - timedelta(days=RUNS_KEPT_DAYS))
    )


def last_run(*, session: Session) -> JobRun | None:
    return session.exec(select(JobRun).order_by(col(JobRun.started_at).desc(), col(JobRun.id).desc())).first()


def latest_runs(*, session: Session) -> dict[str, JobRun]:
    """The newest run of each job (``poll``, ``deliver``, ``cycle``)."""
    newest = (
        sa_select(col(JobRun.job), func.max(JobRun.started_at).label("at"))
        .group_by(col(JobRun.job))
        .subquery()
    )
    stmt = select(JobRun).join(
        newest, (col(JobRun.job) == newest.c.job) & (col(JobRun.started_at) == newest.c.at)
    )
    out: dict[str, JobRun] = {}
    for run in session.exec(stmt):
        out.setdefault(run.job, run)
    return out


def run_stats(*, session: Session) -> list[tuple[str, int, float, int]]:
    """Per job: (job, runs, seconds in all, failed runs) over the runs kept."""
    stmt = select(
        JobRun.job, func.count(), func.sum(JobRun.seconds), func.sum(case((col(JobRun.ok), 0), else_=1))
    ).group_by(col(JobRun.job))
    return [
        (job, int(n), float(total or 0), int(failed or 0)) for job, n, total, failed in session.exec(stmt)
    ]


def daily_activity(*, session: Session, since: datetime) -> dict[date, tuple[int, int]]:
    """Per UTC day since ``since``: (papers first seen, emails sent by the recorded runs)."""
    out: dict[date, list[int]] = {}
    for (seen,) in session.execute(
        sa_select(col(Paper.first_seen_at)).where(col(Paper.first_seen_at) >= since)
    ):
        out.setdefault(seen.date(), [0, 0])[0] += 1
    runs = sa_select(col(JobRun.started_at), col(JobRun.emails)).where(
        col(JobRun.started_at) >= since, col(JobRun.emails) > 0
    )
    for started, emails in session.execute(runs):
        out.setdefault(started.date(), [0, 0])[1] += emails
    return {day: (p, e) for day, (p, e) in out.items()}


def failures(*, session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Failed deliveries, a line per (subscriber, reason): for ``status``."""
    stmt = (
        select(Subscriber.email, Delivery.last_error, func.count(), func.max(Delivery.attempts))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.state) == DeliveryState.FAILED)
        .group_by(col(Subscriber.email), col(Delivery.last_error))
        .order_by(col(Subscriber.email))
        .limit(limit)
    )
    return [
        {"email": email, "reason": reason, "papers": int(n), "attempts": int(attempts)}
        for email, reason, n, attempts in session.exec(stmt)
    ]


def retrying(*, session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """Deliveries waiting for a retry after an error, a line per (subscriber, last error), with
    when the next attempt is due: for ``status``."""
    stmt = (
        sa_select(
            col(Subscriber.email),
            col(Delivery.last_error),
            func.count(),
            func.max(Delivery.attempts),
            func.min(Delivery.next_attempt_at),
        )
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.state) == DeliveryState.PENDING, col(Delivery.attempts) > 0)
        .group_by(col(Subscriber.email), col(Delivery.last_error))
        .order_by(col(Subscriber.email))
        .limit(limit)
    )
    return [
        {
            "email": email,
            "reason": reason,
            "papers": int(n),
            "attempts": int(attempts),
            "next_attempt": _iso(next_at),
        }
        for email, reason, n, attempts, next_at in session.execute(stmt)
    ]


def subscriber_overview(*, session: Session) -> list[dict[str, Any]]:
    """Each subscriber in the store: token, whether they receive, pending papers, last email."""
    pending = (
        sa_select(col(Delivery.subscriber_id), func.count())
        .where(col(Delivery.state) == DeliveryState.PENDING)
        .group_by(col(Delivery.subscriber_id))
    )
    waiting: dict[int, int] = {i: n for i, n in session.execute(pending)}
    latest = sa_select(col(Delivery.subscriber_id), func.max(Delivery.sent_at)).group_by(
        col(Delivery.subscriber_id)
    )
    last_sent: dict[int, datetime | None] = {i: at for i, at in session.execute(latest)}
    out = []
    for sub in session.exec(select(Subscriber).order_by(col(Subscriber.email))):
        state = (
            "left the configuration"
            if not sub.active
            else "unsubscribed"
            if sub.unsubscribed_at
            else "receiving"
        )
        out.append(
            {
                "email": sub.email,
                "name": sub.name,
                "token": sub.token,
                "state": state,
                "pending": int(waiting.get(sub.id or 0, 0)),
                "last_sent": _iso(last_sent.get(sub.id or 0)),
                "schedule": sub.schedule,  # None: schedule.deliver
                "next_email": _iso(sub.next_email_at),  # their own schedule's next fire
            }
        )
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else None
