"""The ``paperboy`` command: parse arguments, build the objects, run one stage or the cycle.

Exit codes: 0 ok, 1 runtime failure (a send failed, a file could not be
read), 2 usage or configuration error.

A command is a ``cmd_<name>`` function; :data:`COMMANDS` maps the names.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, store
from .log import event, setup
from .settings import DEFAULT_CONFIG, ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlmodel import Session

    from .cycle import App

# Each command imports what it uses: the scheduler (APScheduler) and the web server
# (Starlette, uvicorn) only for run and serve, the pipeline (templates, rules, feeds)
# only where an App is built. ``status`` starts with the store alone.

log = logging.getLogger("paperboy")

OK, FAILURE, USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paperboy",
        description="Research-paper digests in; personal email digests and RSS/Atom feeds out.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the YAML configuration (default: {DEFAULT_CONFIG})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("--version", action="version", version=f"paperboy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service: poll the inbox, deliver on schedule")
    run.add_argument(
        "--once", action="store_true", help="one full cycle (ingest, match, deliver, feeds), then exit"
    )

    ingest = sub.add_parser("ingest", help="ingest the named digest files now, and match them")
    ingest.add_argument("files", nargs="+", type=Path, metavar="FILE")

    sub.add_parser("check", help="validate the configuration, the rules and the templates")

    preview = sub.add_parser("preview", help="render a subscriber's next digest without sending it")
    preview.add_argument("email", metavar="EMAIL")
    preview.add_argument(
        "--format",
        choices=("text", "html", "eml"),
        default="text",
        help="text part, HTML part, or the whole message (default: text)",
    )
    preview.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")

    db = sub.add_parser("db", help="the database schema: migrate it, or show where it stands")
    db.add_argument(
        "action",
        choices=("upgrade", "current"),
        help="upgrade: apply every pending migration (run also happens on start); current: show the revision",
    )

    explain = sub.add_parser("explain", help="why a paper did or did not match a subscriber")
    explain.add_argument("email", metavar="EMAIL")
    explain.add_argument("paper", metavar="TITLE", help="the paper's title, or enough of it to be unique")

    sub.add_parser("serve", help="only the web server: feeds, unsubscribe, status page (no scheduling)")

    forget = sub.add_parser(
        "forget", help="take papers out of every feed and the outbox (sent emails stay recorded)"
    )
    forget.add_argument(
        "papers", nargs="*", metavar="PAPER", help="a paper's title, or enough of it to be unique"
    )
    forget.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="everything this digest file brought that no other file also brought (a path, or the "
        "name it was ingested under)",
    )
    rematch = sub.add_parser(
        "rematch", help="match recent papers again and queue what was missed (a new or edited rule)"
    )
    rematch.add_argument(
        "--since", type=float, required=True, metavar="DAYS", help="papers first seen in the last DAYS days"
    )
    rematch.add_argument(
        "who", nargs="?", metavar="EMAIL|TOPIC", help="one subscriber or topic (default: everyone)"
    )
    forget.add_argument("--dry-run", action="store_true", help="say what would be forgotten, change nothing")

    resub = sub.add_parser("resubscribe", help="undo a subscriber's one-click unsubscribe")
    resub.add_argument("email", metavar="EMAIL")

    status = sub.add_parser("status", help="papers, files and deliveries in the store")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument(
        "--subscribers", action="store_true", help="also each subscriber: private feed and page URLs"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup(verbose=args.verbose, quiet=args.quiet)
    try:
        settings = load_settings(args.config)
        return COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        print(f"paperboy: configuration error:\n{exc}", file=sys.stderr)
        return USAGE
    except UsageError as exc:
        print(f"paperboy: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return FAILURE
    except Exception as exc:
        event(log, "failed", level=logging.ERROR, reason=f"{type(exc).__name__}: {exc}")
        log.debug("traceback", exc_info=True)
        return FAILURE


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


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    app = _app(settings)
    app.prepare_store()
    reports = app.ingest(args.files)
    app.match()
    for r in reports:
        detail = r.error or f"{r.entries} entries, {r.new_papers} new, {len(r.problems)} problems"
        print(f"{r.path}: {r.status}: {detail}")
    return FAILURE if any(r.status == "rejected" for r in reports) else OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    app = _app(settings)
    app.renderer.check()
    index = app.index
    email = settings.email
    where = (
        f"smtp {email.smtp.host}:{email.smtp.port or 'default port'}"
        if email.transport == "smtp"
        else f"maildir {email.maildir}"
    )
    print(
        f"{args.config}: OK: {len(settings.subscribers)} subscribers, {len(settings.topics)} topics, "
        f"{index.size} distinct terms, "
        f"delivery by {where}, inbox {settings.inbox}, templates {app.renderer.templates}"
    )
    http = settings.http
    print(f"http: {f'{http.host}:{http.port}, public at {http.url}' if http.enabled else 'off'}")
    for line in _opted_out_lines(app):
        print(line)
    return OK


def _opted_out_lines(app: App) -> list[str]:
    """The one-click opt-outs the store holds (they win over the configuration), if there is a store."""
    url = app.engine.url
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return []  # no store yet; check creates none
    try:
        if store.schema_revision(app.engine) is None:
            return []
        with store.reading(app.engine) as session:
            out = store.opted_out(session=session)
    except Exception as exc:  # check validates the configuration; an unreachable store is only noted
        return [f"store: not readable ({type(exc).__name__}); opt-outs not shown"]
    return [
        f"unsubscribed: {s.email} since {s.unsubscribed_at:%Y-%m-%d} (undo: paperboy resubscribe {s.email})"
        for s in out
    ]


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    if not any(s.email.lower() == args.email.lower() for s in settings.subscribers):
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    app.match()
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=args.email)
        assert sub is not None
        from .compose import next_digest, paper_limits

        limit = paper_limits(settings)[sub.email]
        digest = next_digest(session, sub, settings=settings, limit=limit, at=app.clock())
    if digest is None:
        print(f"nothing pending for {args.email}: no email would be sent", file=sys.stderr)
        return OK
    from .message import list_id

    mail = app.renderer.message(digest, sender=settings.email.from_, list_id=list_id(settings.email.from_))
    if args.format == "eml":
        data = mail.data
    else:
        part = mail.parse().get_body(("plain",) if args.format == "text" else ("html",))
        assert part is not None
        data = str(part.get_content()).encode()
    if args.output:
        args.output.write_bytes(data)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return OK


def _find_paper(session: Session, text: str) -> store.Paper:
    """The paper whose title is ``text``, or the one paper whose title holds it (folded)."""
    from .text import paper_key

    key = paper_key(text)
    if not key:
        raise UsageError(f"{text!r} holds no word of a title")
    paper = store.find_paper(session=session, key=key)
    if paper is not None:
        return paper
    found = store.search_papers(session=session, words=key, limit=11)
    if not found:
        raise UsageError(f"no paper in the store has a title like {text!r}")
    if len(found) > 1:
        listed = "\n".join(f"  {p.title}" for p in found[:10])
        more = "\n  ..." if len(found) > 10 else ""
        raise UsageError(f"{len(found)} papers have titles like {text!r}; say which:\n{listed}{more}")
    return found[0]


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from .cycle import subscriber_rules, topic_rules
    from .rules import explain

    wanted = next((s for s in settings.subscribers if s.email.lower() == args.email.lower()), None)
    if wanted is None:
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    with store.reading(app.engine) as session:
        paper = _find_paper(session, args.paper)
        sub = store.subscriber_by_email(session=session, email=wanted.email)
        delivery = (
            store.find_delivery(session=session, subscriber_id=sub.id, paper_id=paper.id)
            if sub is not None and sub.id is not None and paper.id is not None
            else None
        )
    explanation = explain(subscriber_rules(wanted), topic_rules(settings), paper.title, paper.abstract)
    print(f"paper: {paper.title}")
    print(f"  first seen {paper.first_seen_at:%Y-%m-%d %H:%M} UTC in {paper.source}:{paper.line}")
    print(f"subscriber: {wanted.email}")
    print(explanation.render(), end="")
    if delivery is not None:
        when = f" {delivery.sent_at:%Y-%m-%d %H:%M} UTC" if delivery.sent_at else ""
        error = f"; last error: {delivery.last_error}" if delivery.last_error else ""
        via = ", ".join(delivery.via)
        print(f"store: delivery {delivery.state}{when}, score {delivery.score}, via {via}{error}")
    elif explanation.match is not None:
        print(
            "store: no delivery recorded: papers are matched when first seen, and a new or edited "
            f"rule receives the last {settings.backfill} days (backfill); this one is older, or the "
            f"rule changed since. To queue it: paperboy rematch --since DAYS {wanted.email}"
        )
    else:
        print("store: no delivery recorded")
    return OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = store.make_engine(settings.database)
    store.upgrade(engine)
    with store.reading(engine) as session:
        counts = store.counts(session=session)
        counts["failures"] = store.failures(session=session)
        counts["retrying"] = store.retrying(session=session)
        counts["unsubscribed_emails"] = [
            {"email": s.email, "at": s.unsubscribed_at.isoformat() if s.unsubscribed_at else None}
            for s in store.opted_out(session=session)
        ]
        last = store.last_run(session=session)
        people = store.subscriber_overview(session=session) if args.subscribers else []
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
    counts["next_delivery"] = _next_delivery(settings)
    if args.subscribers:
        counts["subscriber_list"] = [_with_urls(p, settings) for p in people]
    if args.json:
        print(json.dumps(counts, sort_keys=True))
        return OK
    d = counts["deliveries"]
    print(
        f"papers {counts['papers']} (unmatched {counts['unmatched_papers']}, forgotten "
        f"{counts['forgotten_papers']}), files {counts['files']}, "
        f"subscribers {counts['subscribers']} (unsubscribed {counts['unsubscribed']}), "
        f"deliveries pending {d['pending']} sending {d['sending']} sent {d['sent']} failed {d['failed']} "
        f"cancelled {d['cancelled']}, last ingest {counts['last_ingest'] or 'never'}"
    )
    run = counts["last_run"]
    if run is None:
        print("last run: never")
    else:
        outcome = "ok" if run["ok"] else f"FAILED: {run['error'] or 'see the log'}"
        print(f"last run: {run['job']} at {run['started_at']}: {outcome}")
    print(f"next delivery: {counts['next_delivery']} (schedule.deliver {settings.schedule.deliver!r})")
    for r in counts["retrying"]:
        print(
            f"retrying: {r['email']}: {r['papers']} papers after {r['attempts']} attempts, "
            f"next at {r['next_attempt']}: {r['reason']}"
        )
    for f in counts["failures"]:
        print(f"failed: {f['email']}: {f['papers']} papers after {f['attempts']} attempts: {f['reason']}")
    for u in counts["unsubscribed_emails"]:
        print(f"unsubscribed: {u['email']} since {u['at']} (undo: paperboy resubscribe {u['email']})")
    for p in counts.get("subscriber_list", []):
        name = f" ({p['name']})" if p["name"] else ""
        last_email = p["last_sent"] or "never"
        print(f"{p['email']}{name}: {p['state']}, {p['pending']} pending, last email {last_email}")
        print(f"  feed: {p['atom']} (RSS: {p['rss']})")
        print(f"  page: {p['page']}")
    return OK


def _next_delivery(settings: Settings) -> str:
    """When ``schedule.deliver`` fires next, in its zone (without importing the scheduler)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tzlocal import get_localzone

    from .settings.cron import next_fire

    zone = ZoneInfo(settings.timezone) if settings.timezone else get_localzone()
    return next_fire(settings.schedule.deliver, datetime.now(zone)).isoformat(timespec="minutes")


def _with_urls(person: dict[str, object], settings: Settings) -> dict[str, object]:
    """A subscriber's private feed and page URLs (from the token, which stays out of the JSON)."""
    from .feeds import feed_url, subscriber_feed

    token = str(person.pop("token"))
    base = settings.feeds.base_url or ""
    name = subscriber_feed(token)
    return {
        **person,
        "atom": feed_url(base, name, "atom"),
        "rss": feed_url(base, name, "rss"),
        "page": f"{settings.http.url}unsubscribe/{token}",
    }


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    if not args.papers and not args.file:
        raise UsageError("say which papers (PAPER...) or which file (--file FILE) to forget")
    app = _app(settings)
    app.prepare_store()
    chosen: dict[int, store.Paper] = {}
    with store.transaction(app.engine) as session:
        for text in args.papers:
            paper = _find_paper(session, text)
            if paper.forgotten_at is not None:
                print(f"already forgotten: {paper.title}")
            elif paper.id is not None:
                chosen[paper.id] = paper
        for name in args.file:
            record = _find_file(session, name)
            only, shared = store.papers_only_from(session=session, sha256=record.sha256)
            chosen.update((p.id, p) for p in only if p.id is not None)
            print(
                f"{record.path}: {len(only)} papers only it brought; {shared} also brought by another "
                "file are kept"
            )
        for paper in chosen.values():
            print(f"{'would forget' if args.dry_run else 'forget'}: {paper.title}")
        if args.dry_run:
            session.rollback()
            print(f"dry run: {len(chosen)} papers would be forgotten; nothing changed")
            return OK
        done = store.forget_papers(session=session, paper_ids=list(chosen), at=datetime.now(UTC))
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
        if any(s.email.lower() == args.who.lower() for s in settings.subscribers):
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


def _find_file(session: Session, name: str) -> store.IngestedFile:
    """An ingested file: by the content of the file at ``name`` if it exists, else by the path
    or file name it was ingested under."""
    from .ingest import file_hash

    path = Path(name)
    if path.is_file():
        record = store.file_by_hash(session=session, sha256=file_hash(path))
        if record is not None and record.error is None:
            return record
    found = store.files_named(session=session, name=path.name if not path.is_absolute() else name)
    if not found and path.is_absolute():
        found = store.files_named(session=session, name=path.name)
    if not found:
        raise UsageError(f"no ingested file is {name!r} (a rejected file brought nothing to forget)")
    if len(found) > 1:
        listed = "\n".join(f"  {f.path} ({f.ingested_at:%Y-%m-%d %H:%M}, {f.entries} entries)" for f in found)
        raise UsageError(f"{len(found)} ingested files are named {name!r}; give the full path:\n{listed}")
    return found[0]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .web import Server

    app = _app(settings)
    app.prepare_store()
    Server(lambda: app, host=settings.http.host, port=settings.http.port).serve()
    return OK


def cmd_resubscribe(args: argparse.Namespace, settings: Settings) -> int:
    if not any(s.email.lower() == args.email.lower() for s in settings.subscribers):
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    with store.transaction(app.engine) as session:
        was_out = store.resubscribe(session=session, email=args.email)
    if was_out:
        event(log, "subscriber.resubscribed", email=args.email.lower())
        print(f"{args.email} receives digests again (new papers from now on)")
    else:
        print(f"{args.email} had not unsubscribed; nothing changed")
    return OK


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    engine = store.make_engine(settings.database)
    head = store.head_revision()
    if args.action == "current":
        current = store.schema_revision(engine)
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
    "resubscribe": cmd_resubscribe,
    "explain": cmd_explain,
    "forget": cmd_forget,
    "rematch": cmd_rematch,
    "run": cmd_run,
    "ingest": cmd_ingest,
    "check": cmd_check,
    "preview": cmd_preview,
    "status": cmd_status,
}
