"""One run of the pipeline: ingest -> match -> deliver -> feeds.

:class:`App` holds what the stages share (settings, engine, renderer,
transport, clock); ``cli.py`` builds it, tests build it with their own
clock and transport. Each stage is a method that can run alone (``paperboy
ingest`` runs only the first); :meth:`App.cycle` runs them in order.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from tqdm import tqdm

from . import publish_beside, store
from .delivery import DeliveryReport, DeliveryRun
from .ingest import REJECTED, FileReport, ingest_file, move_aside, scan_inbox
from .log import event
from .mailer import Sender, build_sender
from .match import (
    Backfill,
    Matcher,
    changed_owners,
    fingerprints,
    match_new,
    rematch,
    rules_known,
    rules_matched,
)
from .preflight import make_folders
from .publish import publish
from .ratings import SECRET as RATINGS
from .render import Renderer
from .rulebook import build_index
from .rules import Index
from .settings import Settings

log = logging.getLogger("paperboy.cycle")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def cadences(settings: Settings) -> dict[str, tuple[str, str]]:
    """The subscribers with a schedule of their own: address -> (cron line, IANA zone: their
    own, else the configuration's, else the machine's)."""
    own = [s for s in settings.subscribers if s.schedule is not None]
    if not own:
        return {}
    from tzlocal import get_localzone_name

    default = settings.timezone or get_localzone_name()
    return {s.email.lower(): (s.schedule, s.timezone or default) for s in own if s.schedule}


@dataclass(slots=True)
class CycleReport:
    files: list[FileReport] = field(default_factory=list)
    waiting: list[Path] = field(default_factory=list)
    matched_papers: int = 0
    queued: int = 0
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    feeds_changed: int = 0

    @property
    def rejected(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "rejected"]

    @property
    def ok(self) -> bool:
        """Nothing went wrong: no file rejected, no delivery failed or deferred by an error."""
        return self.delivery.ok and not self.rejected

    @property
    def error(self) -> str | None:
        """What went wrong, in a line (None when ok): for the job's record and /healthz."""
        reasons = [f"{len(self.rejected)} file(s) rejected (moved to the inbox's {REJECTED}/)"] * bool(
            self.rejected
        )
        reasons += self.delivery.problems
        return "; ".join(reasons) or None


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        sender: Sender | None = None,
        clock: Clock = utcnow,
        stop: threading.Event | None = None,
        progress: bool | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine or store.make_engine(settings.database)
        self._sender = sender
        self.renderer = Renderer.configured(settings)
        self._index: Index | None = None  # built when first needed: a quiet poll needs none
        self.clock = clock
        self.stop = stop or threading.Event()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._migrated = False
        self._rules_seen = False  # the rules' fingerprints were compared with the store's
        self._synced = False  # the subscribers table follows this configuration

    @property
    def index(self) -> Index:
        """Every rule in one index, built once per App when first needed."""
        if self._index is None:
            self._index = build_index(self.settings)
        return self._index

    def prepare_store(self, *, sync: bool = True) -> None:
        """Migrate the schema and, unless ``sync`` is off (a delivery worker), create the folders
        the configuration names and make the subscribers table follow it: each once per App
        (a configuration reloaded is a new App), so a quiet poll reads no subscriber row."""
        if not self._migrated:
            if sync:
                make_folders(self.settings)
            before, after = store.upgrade(self.engine)
            if before != after:
                event(log, "db.migrated", before=before or "empty", after=after)
            self._migrated = True
        if sync and not self._synced:
            with store.transaction(self.engine) as session:
                store.secret(session=session, name=RATINGS)  # signs rating links; made once
                changed = store.sync_subscribers(
                    session=session,
                    people=[(s.email, s.name) for s in self.settings.subscribers],
                    at=self.clock(),
                    cadence=cadences(self.settings),
                )
            if changed:
                event(
                    log,
                    "subscribers.synced",
                    added=changed.added,
                    left=changed.left,
                    back=changed.back,
                    renamed=changed.renamed,
                )
            self._synced = True

    # ------------------------------------------------------------ stages

    def ingest(self, paths: Sequence[Path]) -> list[FileReport]:
        """Store and match each file (one transaction each), after following the rules."""
        reports: list[FileReport] = []
        if paths:
            self.follow_rules()
        bar = tqdm(paths, desc="ingest", unit="file", disable=not self.progress or len(paths) < 2)
        for path in bar:
            if self.stop.is_set():
                event(log, "ingest.stopped", left=len(paths) - len(reports))
                break
            bar.set_postfix_str(path.name, refresh=False)
            at = self.clock()
            reports.append(ingest_file(self.engine, path, at=at, match=Matcher(lambda: self.index, at=at)))
        return reports

    def poll_inbox(self) -> tuple[list[FileReport], list[Path]]:
        inbox = self.settings.inbox
        ready, waiting = scan_inbox(inbox, settle=self.settings.inbox_settle, now=time.time())
        for path in waiting:
            event(
                log,
                "inbox.settling",
                path=path,
                hint=f"changed in the last {self.settings.inbox_settle:g}s; taken at a later poll",
            )
        reports = self.ingest(ready)
        for report in reports:
            if report.status == "rejected":
                moved = move_aside(report.path, inbox / REJECTED)
                event(
                    log,
                    "inbox.moved_aside",
                    path=report.path,
                    to=moved,
                    hint="nothing of it was stored; fix it and put it back, or leave it",
                )
        return reports, waiting

    def follow_rules(self) -> None:
        """Backfill the rule sets that are new or changed (once per configuration). Done before
        new papers are stored: they are matched as they are stored, against the rules as they
        are now, so the backfill need not read them again."""
        if not self._rules_seen:
            whole = self.settings.rules_digest
            if not rules_known(self.engine, whole):
                prints = fingerprints(self.settings)
                self.backfill(changed_owners(self.engine, prints), days=self.settings.backfill, prints=prints)
                rules_matched(self.engine, whole, self.clock())
            self._rules_seen = True

    def match(self, ingested: Sequence[FileReport] = ()) -> tuple[int, int]:
        """Follow the rules (:meth:`follow_rules`), then match the papers stored but not matched
        yet (by an older paperboy, or a file ingested without matching); returns (papers matched,
        deliveries queued), with those of the ``ingested`` files (matched as they were stored)."""
        self.follow_rules()
        papers, queued = match_new(self.engine, lambda: self.index, at=self.clock())
        papers += sum(f.new_papers for f in ingested)
        queued += sum(f.queued for f in ingested)
        if papers:
            event(log, "match.done", papers=papers, deliveries=queued)
        return papers, queued

    def backfill(
        self, owners: set[str] | None, *, days: float, prints: dict[str, str] | None = None
    ) -> Backfill:
        """Match the papers of the last ``days`` days against ``owners``' rules (None: everyone's)."""
        if owners is not None and not owners:
            return Backfill(0, 0, 0, 0)
        done = rematch(self.engine, self.settings, owners=owners, days=days, at=self.clock(), prints=prints)
        if done.queued or done.topic_entries:
            event(
                log,
                "match.backfill",
                owners=done.owners,
                days=days,
                papers=done.papers,
                deliveries=done.queued,
                topic_entries=done.topic_entries,
            )
        return done

    @property
    def sender(self) -> Sender:
        """Who sends: the one given, else the configuration's (made when first needed,
        so that commands that send nothing import no SMTP client)."""
        if self._sender is None:
            self._sender = build_sender(self.settings)
        return self._sender

    def learn(self) -> int:
        """Refit the learned tastes whose ratings or likes changed, then queue the suggestions
        of the new papers (before a delivery run); how many tastes were fitted."""
        from .taste.learn import learn  # imports numpy and scikit-learn only when someone rated

        done = learn(self.engine, self.settings, at=self.clock())
        if any(s.suggest for s in self.settings.subscribers):
            from .taste.suggest import suggest

            suggested = suggest(self.engine, self.settings, at=self.clock())
            if suggested:
                event(log, "taste.suggested", deliveries=suggested)
        for email, unknown in done.unknown.items():  # said when the likes are resolved, not every run
            event(log, "taste.unknown_likes", level=logging.WARNING, subscriber=email, likes=unknown)
        if done.fitted:
            event(log, "taste.fitted", readers=done.fitted)
        return done.fitted

    def deliver(self) -> DeliveryReport:
        run = DeliveryRun(
            engine=self.engine,
            sender=self.sender,
            renderer=self.renderer,
            settings=self.settings,
            clock=self.clock,
            stop=self.stop,
        )
        report = run.run()
        if report.emails or report.failed or report.retrying or report.not_tried:
            event(
                log,
                "deliver.done",
                emails=report.emails,
                papers=report.papers,
                failed=len(report.failed),
                retrying=len(report.retrying),
                not_tried=report.not_tried,
            )
        return report

    def write_feeds(self) -> int:
        return publish(self.engine, self.settings, at=self.clock())

    # ------------------------------------------------------------ the whole run

    def run_job(self, job: str, *, send: bool, lead: bool = True) -> CycleReport | None:
        """``cycle`` as a recorded job (``poll``, ``deliver``, ``cycle``): its time and outcome
        go to the store for /healthz, /metrics and the status page. None when it raised.
        ``lead=False`` is a delivery worker's job: only the sending (see :meth:`cycle`)."""
        started, t0 = self.clock(), time.monotonic()
        report: CycleReport | None = None
        error: str | None = None
        try:
            report = self.cycle(send=send, lead=lead)
            error = report.error
            return report
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            run = store.JobRun(
                job=job,
                started_at=started,
                seconds=time.monotonic() - t0,
                ok=error is None,
                papers=sum(f.new_papers for f in report.files) if report else 0,
                emails=report.delivery.emails if report else 0,
                error=error[:1000] if error else None,
            )
            try:
                with store.transaction(self.engine) as session:
                    store.record_run(session=session, run=run)
            except Exception as exc:  # the store is away: the job's own outcome matters more
                event(log, "job.unrecorded", level=logging.WARNING, job=job, reason=str(exc))

    def cycle(self, *, send: bool = True, lead: bool = True) -> CycleReport:
        """The leader's cycle: the inbox, matching, the due digests (``send``), the feeds.
        A delivery worker's (``lead=False``) only sends what is due: the subscribers table,
        the inbox and the feeds are the leader's, so it never writes them."""
        report = CycleReport()
        if not lead:
            self.prepare_store(sync=False)
            if send:
                report.delivery = self.deliver()
            return report
        self.prepare_store()
        report.files, report.waiting = self.poll_inbox()
        if self.stop.is_set():
            return report
        report.matched_papers, report.queued = self.match(report.files)
        beside = 0  # feed files written by a second process during the delivery run
        if send and not self.stop.is_set():
            self.learn()
            writing = publish_beside.start(self.engine, self.settings, at=self.clock())
            try:
                report.delivery = self.deliver()
            except Exception:
                if writing is not None:
                    writing.finish()
                self.write_feeds()  # what came in is in the feeds, whatever happened to the mail
                raise
            beside = writing.finish() if writing is not None else 0
        report.feeds_changed = beside + self.write_feeds()
        return report
