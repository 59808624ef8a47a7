"""``paperboy status``: what the store holds and whether the last run went well.

Read from the store alone (no scheduler, no web server, no SMTP client; on a SQLite store,
not even SQLAlchemy: :mod:`service.glance`): the
counts, the last job run and its error, when the next delivery is due (the
cron line read by :func:`service.settings.cron.next_fire`), the deliveries
waiting for a retry and those that failed, the readers who unsubscribed, and
on request each subscriber with their private feed and page URLs.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tzlocal import get_localzone

from . import glance
from .settings import Settings
from .settings.cron import next_fire


def report(settings: Settings, *, subscribers: bool = False) -> dict[str, Any]:
    """Everything ``status`` shows, as ``status --json`` prints it.

    A SQLite store at the newest schema is read through ``sqlite3`` alone; any other
    (PostgreSQL, a store to create or migrate) through the store package, which migrates
    it first, as every command does."""
    connection = glance.open_sqlite(settings.database)
    if connection is not None:
        with closing(connection):
            counts = _read(glance.Reader(connection), subscribers)
    else:
        from . import store

        engine = store.make_engine(settings.database)
        store.upgrade(engine)
        with store.reading(engine) as session:
            counts = _read(glance.on_session(session), subscribers)
        engine.dispose()
    counts["next_delivery"] = next_delivery(settings)
    if subscribers:
        counts["subscriber_list"] = [_with_urls(p, settings) for p in counts.pop("subscriber_list")]
    return counts


def _read(db: glance.Reader, subscribers: bool) -> dict[str, Any]:
    counts = glance.counts(db)
    counts["failures"] = glance.failures(db)
    counts["retrying"] = glance.retrying(db)
    counts["unsubscribed_emails"] = [
        {"email": out.email, "at": out.unsubscribed_at.isoformat()} for out in glance.opted_out(db)
    ]
    last = glance.last_run(db)
    counts["last_run"] = (
        None
        if last is None
        else {
            "job": last.job,
            "started_at": last.started_at.isoformat(timespec="seconds"),
            "ok": last.ok,
            "error": last.error,
        }
    )
    if subscribers:
        counts["subscriber_list"] = glance.subscriber_overview(db)
    return counts


def lines(counts: dict[str, Any], settings: Settings) -> list[str]:
    """The report as ``status`` prints it."""
    d = counts["deliveries"]
    left = (
        f"; {counts['left_configuration']} left the configuration, their {counts['cancelled_left']} "
        "pending deliveries cancelled"
        if counts["left_configuration"]
        else ""
    )
    out = [
        f"papers {counts['papers']} (unmatched {counts['unmatched_papers']}, forgotten "
        f"{counts['forgotten_papers']}), files {counts['files']}, "
        f"subscribers {counts['subscribers']} (unsubscribed {counts['unsubscribed']}{left}), "
        f"deliveries pending {d['pending']} sending {d['sending']} sent {d['sent']} failed {d['failed']} "
        f"cancelled {d['cancelled']}, last ingest {counts['last_ingest'] or 'never'}"
    ]
    run = counts["last_run"]
    if run is None:
        out.append("last run: never")
    else:
        outcome = "ok" if run["ok"] else f"FAILED: {run['error'] or 'see the log'}"
        out.append(f"last run: {run['job']} at {run['started_at']}: {outcome}")
    out.append(f"next delivery: {counts['next_delivery']} (schedule.deliver {settings.schedule.deliver!r})")
    for r in counts["retrying"]:
        out.append(
            f"retrying: {r['email']}: {r['papers']} papers after {r['attempts']} attempts, "
            f"next at {r['next_attempt']}: {r['reason']}"
        )
    for f in counts["failures"]:
        out.append(
            f"failed: {f['email']}: {f['papers']} papers after {f['attempts']} attempts: {f['reason']}"
        )
    for u in counts["unsubscribed_emails"]:
        undo = f"paperboy resubscribe {u['email']}"
        out.append(f"unsubscribed: {u['email']} since {u['at']} (undo: {undo})")
    for p in counts.get("subscriber_list", []):
        name = f" ({p['name']})" if p["name"] else ""
        last_email = p["last_sent"] or "never"
        cadence = (
            f", own schedule {p['schedule']!r}, next email {p['next_email']}" if p.get("schedule") else ""
        )
        out.append(
            f"{p['email']}{name}: {p['state']}, {p['pending']} pending, last email {last_email}{cadence}"
        )
        out.append(f"  feed: {p['atom']} (RSS: {p['rss']})")
        out.append(f"  page: {p['page']}")
        out.append(f"  unsubscribe: {p['unsubscribe']}")
    return out


def next_delivery(settings: Settings) -> str:
    """When ``schedule.deliver`` fires next, in its zone (without importing the scheduler)."""
    zone = ZoneInfo(settings.timezone) if settings.timezone else get_localzone()
    return next_fire(settings.schedule.deliver, datetime.now(zone)).isoformat(timespec="minutes")


def _with_urls(person: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A subscriber's private feed and page URLs (from the token, which stays out of the JSON)."""
    from .feeds import feed_url, reader_page, subscriber_feed

    token = str(person.pop("token"))
    base = settings.feeds.base_url or ""
    name = subscriber_feed(token)
    return {
        **person,
        "atom": feed_url(base, name, "atom"),
        "rss": feed_url(base, name, "rss"),
        "page": reader_page(settings.http.url, token),
        "unsubscribe": f"{settings.http.url}unsubscribe/{token}",
    }
