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

from .. import glance
from .tables import JobRun, Paper

# ---------------------------------------------------------------- status
# The SQL is service.glance's, which status and check run without SQLAlchemy; these read it
# on a session's connection.


def counts(*, session: Session) -> dict[str, Any]:
    """Papers, files, subscribers and deliveries by state (:func:`service.glance.counts`)."""
    return glance.counts(glance.on_session(session))


def failures(*, session: Session) -> list[dict[str, Any]]:
    """Failed deliveries, a line per (subscriber, reason) (:func:`service.glance.failures`)."""
    return glance.failures(glance.on_session(session))


def opted_out(*, session: Session) -> list[glance.OptOut]:
    """The readers who unsubscribed, by address (:func:`service.glance.opted_out`)."""
    return glance.opted_out(glance.on_session(session))


def last_run(*, session: Session) -> glance.LastRun | None:
    """The newest job run (:func:`service.glance.last_run`)."""
    return glance.last_run(glance.on_session(session))


# ---------------------------------------------------------------- job runs


RUNS_KEPT_DAYS = 90


def record_run(*, session: Session, run: JobRun) -> None:
    """Keep the run, and forget runs older than ``RUNS_KEPT_DAYS``."""
    session.add(run)
    session.execute(
        delete(JobRun).where(col(JobRun.started_at) < run.started_at - timedelta(days=RUNS_KEPT_DAYS))
    )


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
