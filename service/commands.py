"""What each ``paperboy`` command does, one ``cmd_<name>`` function each (:data:`COMMANDS`);
:mod:`service.cli` reads the arguments and calls them. The commands about one reader
(preview, explain, unsubscribe, resubscribe) are :mod:`service.reader_commands`'s.

Each command imports what it uses: the scheduler (APScheduler) and the web server
(Starlette, uvicorn) only for run and serve, the pipeline (templates, rules, feeds)
only where an App is built. ``status`` and ``check`` read a SQLite store through
:mod:`service.glance`, without SQLAlchemy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from . import glance
from .errors import UsageError
from .log import event
from .settings import ConfigError, Settings
from .settings.base import sqlite_file

if TYPE_CHECKING:
    from .cycle import App

log = logging.getLogger("paperboy")

OK, FAILURE, USAGE = 0, 1, 2


def _app(settings: Settings, **kwargs: object) -> App:
    from .cycle import App
    from .rules import RuleError

    try:
        return App(settings, **kwargs)  # type: ignore[arg-type]
    except RuleError as exc:  # the settings validated every rule; this is a safety net
        raise ConfigError(str(exc)) from exc


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.once:
        from .scheduler import Service

        led = Service(args.config, settings, lambda s, stop: _app(s, stop=stop)).run()
        return OK if led else FAILURE
    app = _app(settings)
    report = app.run_job("cycle", send=True)
    assert report is not None  # run_job returns a report or raises
    new = sum(f.new_papers for f in report.files)
    event(
        log,
        "cycle.done",
        files=len(report.files),
        new_papers=new,
        deliveries=report.queued,
        emails=report.delivery.emails,
        failed=len(report.delivery.failed),
        feeds_changed=report.feeds_changed,
    )
    if not report.ok:
        event(log, "cycle.failed", level=logging.ERROR, reason=report.error)
        return FAILURE
    return OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Send due digests beside the leader: claims skip rows another process holds, so any
    number of workers (and the leader) share the work and send each email once."""
    if not args.once:
        from .scheduler import Service

        Service(args.config, settings, lambda s, stop: _app(s, stop=stop), role="worker").run()
        return OK
    report = _app(settings).run_job("deliver", send=True, lead=False)
    assert report is not None  # run_job returns a report or raises
    event(
        log,
        "worker.done",
        emails=report.delivery.emails,
        papers=report.delivery.papers,
        failed=len(report.delivery.failed),
    )
    if not report.ok:
        event(log, "worker.failed", level=logging.ERROR, reason=report.error)
        return FAILURE
    return OK


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    app = _app(settings)
    app.prepare_store()
    reports = app.ingest(args.files)
    app.match(reports)
    for r in reports:
        detail = r.error or f"{r.entries} entries, {r.new_papers} new, {len(r.problems)} problems"
        print(f"{r.path}: {r.status}: {detail}")
    return FAILURE if any(r.status == "rejected" for r in reports) else OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """The configuration, its rules and templates, and what the store says of it; on a SQLite
    store at the newest schema without importing the store package (:mod:`service.glance`)."""
    from .render import Renderer
    from .rulebook import build_index
    from .rules import RuleError

    renderer = Renderer.configured(settings)
    renderer.check()
    try:
        index = build_index(settings)
    except RuleError as exc:  # the settings validated every rule; this is a safety net
        raise ConfigError(str(exc)) from exc
    email = settings.email
    where = (
        f"smtp {email.smtp.host}:{email.smtp.port or 'default port'}"
        if email.transport == "smtp"
        else f"maildir {email.maildir}"
    )
    print(
        f"{args.config}: OK: {len(settings.subscribers)} subscribers, {len(settings.topics)} topics, "
        f"{index.size} distinct terms, "
        f"delivery by {where}, inbox {settings.inbox}, templates {renderer.templates}"
    )
    http = settings.http
    print(f"http: {f'{http.host}:{http.port}, public at {http.url}' if http.enabled else 'off'}")
    for line in _store_lines(settings, args.config):
        print(line)
    if not args.connect:
        return OK
    from . import store
    from .preflight import connect

    engine = store.make_engine(settings.database)
    try:
        checks = connect(settings, engine)
    finally:
        engine.dispose()
    for found in checks:
        print(found)
    return OK if all(c.ok for c in checks) else FAILURE


def cmd_send_test(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from .mailer import SendError
    from .preflight import send_test
    from .settings.addresses import check_address

    try:
        to = check_address(args.email)
    except ValueError as exc:
        raise UsageError(f"{args.email!r}: {exc}") from exc
    app = _app(settings)
    app.prepare_store()
    try:
        mail, papers = send_test(app.engine, settings, app.renderer, to=to, at=datetime.now(UTC))
    except SendError as exc:
        print(f"send-test: FAILED: {exc}", file=sys.stderr)
        return FAILURE
    except LookupError as exc:
        raise UsageError(str(exc)) from exc
    smtp = settings.email.smtp
    how = (
        f"smtp {smtp.host}:{smtp.port or 'the default port'}"
        if settings.email.transport == "smtp"
        else f"maildir {settings.email.maildir}"
    )
    print(f"sent a digest of the latest {papers} papers to {to} by {how} ({mail.message_id})")
    return OK


def _store_lines(settings: Settings, config: Path) -> list[str]:
    """The one-click opt-outs the store holds (they win over the configuration), and the
    configured likes it holds no paper for, if there is a store (check creates none)."""
    connection = glance.open_sqlite(settings.database)
    if connection is not None:
        with closing(connection):
            return _store_notes(glance.Reader(connection), settings, config, glance.head_revision())
    path = sqlite_file(settings.database)
    if path is not None and not path.is_file():
        return []  # no store yet
    from . import store

    engine = store.make_engine(settings.database)
    try:
        try:
            revision = store.schema_revision(engine)
        except Exception as exc:  # check validates the configuration; an unreachable store is only noted
            return [f"store: not readable ({type(exc).__name__}); opt-outs not shown"]
        store.check_known(revision)  # a database of a newer paperboy: refused, as by every command
        if revision is None:
            return []
        with store.reading(engine) as session:
            return _store_notes(glance.on_session(session), settings, config, revision)
    finally:
        engine.dispose()


def _store_notes(db: glance.Reader, settings: Settings, config: Path, revision: str) -> list[str]:
    try:
        out = glance.opted_out(db)
        likes = []
        if revision >= "0011" and any(s.like for s in settings.subscribers):
            from .taste.likes import like_warnings

            likes = like_warnings(db, settings, config)
    except Exception as exc:  # check validates the configuration; an unreachable store is only noted
        return [f"store: not readable ({type(exc).__name__}); opt-outs not shown"]
    return [
        f"unsubscribed: {s.email} since {s.unsubscribed_at:%Y-%m-%d} (undo: paperboy resubscribe {s.email})"
        for s in out
    ] + likes


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .status import lines, report

    counts = report(settings, subscribers=args.subscribers)
    print(json.dumps(counts, sort_keys=True) if args.json else "\n".join(lines(counts, settings)))
    return OK


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from .curate import forget

    if not args.papers and not args.file:
        raise UsageError("say which papers (PAPER...) or which file (--file FILE) to forget")
    app = _app(settings)
    app.prepare_store()
    found = forget(
        app.engine, titles=args.papers, files=args.file, at=datetime.now(UTC), dry_run=args.dry_run, say=print
    )
    if found.done is None:
        print(f"dry run: {len(found.chosen)} papers would be forgotten; nothing changed")
        return OK
    done = found.done
    event(log, "papers.forgotten", papers=done.papers, cancelled=done.cancelled, topic_rows=done.topic_rows)
    changed = app.write_feeds()
    print(
        f"forgot {done.papers} papers: {done.cancelled} pending deliveries cancelled, "
        f"{done.topic_rows} topic feed entries removed, {changed} feed files rewritten "
        "(sent emails stay recorded)"
    )
    return OK


def cmd_rematch(args: argparse.Namespace, settings: Settings) -> int:
    from .match import subscriber_owner, topic_owner

    if args.since <= 0:
        raise UsageError("--since takes a number of days above 0")
    owners: set[str] | None = None
    if args.who:
        if settings.subscriber(args.who) is not None:
            owners = {subscriber_owner(args.who)}
        elif args.who in settings.topics:
            owners = {topic_owner(args.who)}
        else:
            raise UsageError(f"{args.who} is neither a subscriber nor a topic in {args.config}")
    app = _app(settings)
    app.prepare_store()
    app.match()  # new papers first: a rematch covers only papers matched once already
    done = app.backfill(owners, days=args.since)
    print(
        f"rematched {done.papers} papers of the last {args.since:g} days for {done.owners} subscribers "
        f"and topics: {done.queued} deliveries queued, {done.topic_entries} topic feed entries added "
        "(pairs queued before are never queued again)"
    )
    if done.topic_entries:
        app.write_feeds()
    return OK


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from .health import ask

    healthy, line = ask(settings.http)
    print(line)
    return OK if healthy else FAILURE


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .server import Server

    app = _app(settings)
    app.prepare_store()
    Server(lambda: app, host=settings.http.host, port=settings.http.port).serve()
    return OK


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from . import store

    engine = store.make_engine(settings.database)
    head = store.head_revision()
    if args.action == "current":
        current = store.schema_revision(engine)
        store.check_known(current)
        state = "up to date" if current == head else f"behind; run `paperboy db upgrade` to reach {head}"
        print(f"the database is at {current or '(empty)'}: {state}")
        return OK
    before, after = store.upgrade(engine)
    if before == after:
        print(f"the database is up to date at {after}")
    else:
        print(f"upgraded the database from {before or '(empty)'} to {after}")
    return OK


COMMANDS = {
    "db": cmd_db,
    "serve": cmd_serve,
    "health": cmd_health,
    "forget": cmd_forget,
    "rematch": cmd_rematch,
    "run": cmd_run,
    "worker": cmd_worker,
    "ingest": cmd_ingest,
    "check": cmd_check,
    "send-test": cmd_send_test,
    "status": cmd_status,
}
