"""The outbox: which (subscriber, paper) pairs are due, and moving them along.

Matching writes one ``deliveries`` row per (subscriber, paper) that matched,
in state ``pending``, with the matched terms and score, before anything is
sent. Delivery then works in chunks of subscribers, as a pipeline: one thread
claims the next chunk while another renders the chunk before it and the
senders send the one before that; the senders take emails from a queue, so
they never wait for a chunk to finish. SMTP sessions run in a child process
of their own (:mod:`service.courier`): in this one they would wait for the
interpreter after every server reply while a chunk renders.

1. claim (one short transaction): the due rows of a few subscribers become
   ``sending``, leased to this process (``claimed_by``, ``lease_until``), and
   come back from the same statement (``RETURNING``) for rendering.
   On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``, so two
   processes never claim the same row; on SQLite writers take turns.
2. render one email per subscriber with all their claimed papers (best
   first; over ``max_papers`` the rest are counted and linked to the feed).
3. send, over ``email.smtp.concurrency`` connections at no more than
   ``email.smtp.rate`` messages a second, and record each outcome at once:
   accepted -> a *sent mark* (one row in ``sent_marks``; a thread commits
   the marks gathered since its last commit in one insert), which is folded
   into the rows (``sent``) every FOLD_EVERY emails, in one statement; a
   temporary error (4xx, network, timeout) -> ``pending``
   again, due after an exponential backoff with jitter (``retry_after``
   doubling up to ``retry_max``); a permanent error (5xx, the recipient
   refused) or the last of ``max_attempts`` -> ``failed``, with the reason.
   Rows claimed but not tried (the run stopped, the server went away) go
   back to ``pending`` without an attempt counted.

A row in ``sending`` whose lease has run out belongs to a process that died:
it is due again, but every claim first folds the sent marks of every
process, so an email whose mark was committed is never sent again. That
leaves one window in which a pair can be delivered twice: the server
accepted the message and the process died before its mark committed (the
answer on its way from the sending process, the commit then under way, or
the one after it: a few milliseconds). When the main process dies, the
sending process sees its pipe close and leaves at once, mid-message, so a
server never completes a message that nobody can record. When the sending
process dies alone, the emails it held stay ``sending`` until their lease
runs out: the ones among them the server had accepted arrive twice. The
retried message carries the same ``Message-ID``, so mail clients can drop it.

Papers are matched once, when they are new (``papers.matched_at``); a
subscriber added later receives the papers that arrive after they joined.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from . import store
from .courier import Courier
from .log import event
from .mailer import SendError, SmtpTransport, TokenBucket, Transport, send_from_queue
from .render import Digest, Mail, PaperView, Renderer, list_id, message_id, paper_link, sender_address
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
                    if sub is not None and sub.id is not None and sub.unsubscribed_at is None:
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
    subscriber_id: int
    mail: Mail
    delivery_ids: list[int]
    attempts: int = 0  # made so far for these deliveries (the most of any)

    @property
    def papers(self) -> int:
        return len(self.delivery_ids)


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
    sender = sender_address(settings.email.from_)
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
    """What ``sub``'s next email would hold (``preview``), or None when nothing is pending."""
    assert sub.id is not None
    rows = store.outbox_rows(session=session, subscriber_ids=[sub.id])
    if not rows:
        return None
    [letter], texts = letters(session, {sub.id: sub}, rows, Papers(), limits={}, default=limit)
    return _digest(letter, texts, settings=settings, at=at), letter.delivery_ids


class Papers:
    """What a delivery run has read of papers: each one goes into many emails, so its
    first-seen time and its text are read once (at most ``keep`` of each are kept)."""

    def __init__(self, keep: int = 50_000) -> None:
        self.keep = keep
        self._seen: dict[int, Any] = {}
        self._texts: dict[int, tuple[str, str, str]] = {}

    def seen(self, session: Session, paper_ids: set[int]) -> dict[int, Any]:
        return self._read(self._seen, store.paper_seen, session, paper_ids)

    def texts(self, session: Session, paper_ids: set[int]) -> dict[int, tuple[str, str, str]]:
        return self._read(self._texts, store.paper_texts, session, paper_ids)

    def _read(
        self, known: dict[int, Any], read: Callable[..., dict[int, Any]], session: Session, ids: set[int]
    ) -> Any:
        missing = ids.difference(known)
        if missing:
            if len(known) + len(missing) > self.keep:
                known.clear()
                missing = ids
            known.update(read(session=session, paper_ids=missing))
        return known


@dataclass(frozen=True, slots=True)
class Letter:
    """One subscriber's email before it is written: everything the templates need from
    the store (plain data: writing it needs no database)."""

    subscriber_id: int
    email: str
    name: str | None
    token: str
    delivery_ids: list[int]  # every row the email carries
    attempts: int  # made so far for these rows (the most of any)
    shown: list[store.OutboxRow]  # the best ``max_papers`` of them, in order


def letters(
    session: Session,
    subscribers: dict[int, store.Subscriber],
    rows: dict[int, list[store.OutboxRow]],
    papers: Papers,
    *,
    limits: dict[str, int],
    default: int,
) -> tuple[list[Letter], dict[int, tuple[str, str, str]]]:
    """Each subscriber's letter for ``rows`` (by subscriber id): the best ``limits[email]``
    (else ``default``) papers shown; and the texts of (at least) the papers shown
    (what is not known of the papers yet is read in two queries for all)."""
    seen = papers.seen(session, {r.paper_id for group in rows.values() for r in group})
    out = []
    for sid, group in rows.items():
        sub = subscribers[sid]
        shown = store.best_first(group, limits.get(sub.email, default), seen)
        ids = [r.id for r in group]
        out.append(Letter(sid, sub.email, sub.name, sub.token, ids, max(r.attempts for r in group), shown))
    return out, papers.texts(session, {r.paper_id for letter in out for r in letter.shown})


def _digest(
    letter: Letter, papers: dict[int, tuple[str, str, str]], *, settings: Settings, at: datetime
) -> Digest:
    views = []
    for row in letter.shown:
        title, abstract, key = papers[row.paper_id]
        views.append(
            PaperView.build(
                title=title,
                abstract=abstract,
                link=paper_link(settings.email.paper_link, title=title, key=key),
                terms=row.terms,
                score=row.score,
                via=row.via,
            )
        )
    return Digest(
        to_email=letter.email,
        to_name=letter.name,
        papers=views,
        more=len(letter.delivery_ids) - len(letter.shown),
        feed_url=feed_url(settings, letter.token),
        unsubscribe=unsubscribe_urls(settings, letter.token),
        message_id=message_id(
            sender=settings.email.from_, token=letter.token, delivery_ids=letter.delivery_ids
        ),
        date=at,
    )


def write_letters(
    letters: list[Letter],
    texts: dict[int, tuple[str, str, str]],
    *,
    renderer: Renderer,
    settings: Settings,
    at: datetime,
) -> list[Outgoing]:
    """The emails for ``letters`` (``texts``: the papers they show). No database."""
    sender, lid = settings.email.from_, list_id(settings.email.from_)
    return [
        Outgoing(
            letter.email,
            letter.subscriber_id,
            renderer.message(_digest(letter, texts, settings=settings, at=at), sender=sender, list_id=lid),
            letter.delivery_ids,
            letter.attempts,
        )
        for letter in letters
    ]


def worker_id() -> str:
    """Who holds a claim: host, process and a random tag (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(attempt: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Seconds before retrying after failed attempt ``attempt`` (1-based): ``first``,
    doubling each time up to ``cap``, times a random factor in [0.5, 1) so that
    many failed deliveries do not all come back at the same moment."""
    return min(cap, first * 2 ** max(0, attempt - 1)) * rng.uniform(0.5, 1.0)


class Rendering:
    """Claimed chunks into emails, for one delivery run (or the benchmark): each chunk's
    letters read from the store in one short read (papers read once per run,
    :class:`Papers`), then written outside the transaction."""

    def __init__(self, engine: Engine, renderer: Renderer, settings: Settings) -> None:
        self.engine, self.renderer, self.settings = engine, renderer, settings
        self.limits = paper_limits(settings)
        self.papers = Papers()

    def __call__(self, claim: Claim) -> list[Outgoing]:
        with store.reading(self.engine) as session:
            subscribers = store.subscribers_by_id(session=session, ids=list(claim.rows))
            found, texts = letters(
                session,
                subscribers,
                claim.rows,
                self.papers,
                limits=self.limits,
                default=self.settings.email.max_papers,
            )
        return write_letters(found, texts, renderer=self.renderer, settings=self.settings, at=claim.at)


@dataclass(slots=True)
class DeliveryReport:
    emails: int = 0
    papers: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason): failed for good
    retrying: list[tuple[str, str]] = field(default_factory=list)  # (address, reason): due again later
    not_tried: int = 0  # emails claimed and given back (the run stopped or the server went away)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.retrying


CLAIM_SUBSCRIBERS = 50  # subscribers claimed per chunk
FOLD_EVERY = 50  # sent marks folded into the outbox rows after this many (and at the end of a run)


class _SentBook:
    """Accepted emails on their way into ``sent_marks``, committed in groups.

    The event loop hands each accepted email over and goes on sending; one
    thread commits whatever has gathered since its last commit as one insert
    (a group commit), so a mark waits for at most one commit before its own.
    A commit that fails stops the run: the next :meth:`add` or :meth:`drain`
    raises it.
    """

    def __init__(
        self,
        record: Callable[[list[tuple[Outgoing, datetime]]], None],
        fold: Callable[[], None],
        executor: ThreadPoolExecutor,
    ):
        self.record, self.fold, self.executor = record, fold, executor
        self.unfolded = 0  # marks committed since the last fold
        self.waiting: list[tuple[Outgoing, datetime]] = []
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def add(self, item: Outgoing, at: datetime) -> None:
        if self.error is not None:
            raise self.error
        self.waiting.append((item, at))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._commit())

    async def _commit(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting and self.error is None:
            batch, self.waiting = self.waiting, []
            try:
                await loop.run_in_executor(self.executor, self._record, batch)
            except Exception as exc:  # kept, and raised to the run by add() or drain()
                self.error = exc

    def _record(self, batch: list[tuple[Outgoing, datetime]]) -> None:
        """(On the executor's thread.) Commit the marks; every FOLD_EVERY of them, fold."""
        self.record(batch)
        self.unfolded += len(batch)
        if self.unfolded >= FOLD_EVERY:
            self.fold()
            self.unfolded = 0

    async def drain(self) -> None:
        """Wait until every accepted email so far is committed (raises what a commit raised)."""
        while self.task is not None and not self.task.done():
            await self.task
        if self.error is not None:
            raise self.error


@dataclass(frozen=True, slots=True)
class Claim:
    # by subscriber; empty: every due row was locked by another process
    rows: dict[int, list[store.OutboxRow]]
    after: int  # the highest subscriber id claimed
    at: datetime

    @property
    def delivery_ids(self) -> list[int]:
        return [r.id for group in self.rows.values() for r in group]


@dataclass(slots=True)
class Delivery:
    """One delivery run's wiring."""

    engine: Engine
    transport: Transport
    renderer: Renderer
    settings: Settings
    clock: Callable[[], datetime]
    worker: str = field(default_factory=worker_id)
    rng: random.Random = field(default_factory=random.Random)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> DeliveryReport:
        """Claim, render and send chunk after chunk until nothing is due (or the server is away)."""
        report = DeliveryReport()
        try:
            asyncio.run(self._run(report))
        finally:  # whatever the server accepted is marked sent, even when the run broke off
            self._fold()
        return report

    @property
    def _senders(self) -> int:
        """How many connections send at once (a chunk is queued once the queue is down
        to one email per sender)."""
        return self.settings.email.smtp.concurrency if self.settings.email.transport == "smtp" else 1

    async def _run(self, report: DeliveryReport) -> None:
        """The pipeline. One thread claims chunk after chunk, another renders each claimed
        chunk into a queue, the senders take emails from the queue over their connections
        (SMTP: in the sending process, :class:`Courier`; a maildir: in this event loop),
        and a fourth thread records what the server accepted. So the next chunk is claimed
        while one is rendered and another sent, and the senders never wait for a chunk to
        finish."""
        workers = self._senders
        render = Rendering(self.engine, self.renderer, self.settings)
        queue: asyncio.Queue[Outgoing | None] = asyncio.Queue()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-claim") as claims,
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-render") as renders,
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-mark") as marks,
        ):
            book = _SentBook(functools.partial(self._sent, report=report), self._fold, marks)
            low = asyncio.Event()  # the queue is down to one email per sender: time to add a chunk

            def took() -> None:
                if queue.qsize() <= workers:
                    low.set()

            def sent(item: Outgoing) -> None:
                book.add(item, self.clock())

            async def failed(item: Outgoing, exc: SendError) -> None:
                await asyncio.get_running_loop().run_in_executor(marks, self._failed, item, exc, report)

            courier: Courier | None = None
            if isinstance(self.transport, SmtpTransport):  # the sessions in a process of their own
                courier = Courier(self.transport, stop=self.stop, sent=sent, failed=failed, took=took)
                senders = [asyncio.create_task(courier.run(queue))]
            else:  # a maildir: file writes, nothing to wait for (nor any rate to keep)
                bucket = TokenBucket(None)
                senders = [
                    asyncio.create_task(
                        send_from_queue(
                            queue,
                            self.transport,
                            bucket=bucket,
                            stopped=self.stop.is_set,
                            took=took,
                            sent=sent,
                            failed=failed,
                        )
                    )
                    for _ in range(workers)
                ]
            try:
                await self._produce(queue, low, senders, claims, renders, render, report)
                for _ in senders:
                    queue.put_nowait(None)  # no more: each sender stops when it takes one
                await asyncio.gather(*senders)
            finally:
                for task in senders:
                    task.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
                left = []
                while not queue.empty():
                    item = queue.get_nowait()
                    if item is not None:
                        left.append(item)
                if left:  # claimed, not tried: the run stopped or the server went away
                    self._give_back([i for item in left for i in item.delivery_ids], report, emails=len(left))
                if courier is not None and courier.lost:  # the sending process died mid-send
                    event(
                        log,
                        "deliver.lost",
                        level=logging.ERROR,
                        emails=len(courier.lost),
                        reason="the sending process ended before answering; the rows stay sending"
                        " and are due again when their lease runs out (an email may then arrive twice)",
                    )
                await book.drain()  # what the server accepted is recorded before the run ends

    async def _produce(
        self,
        queue: asyncio.Queue[Outgoing | None],
        low: asyncio.Event,
        senders: list[asyncio.Task[None]],
        claims: ThreadPoolExecutor,
        renders: ThreadPoolExecutor,
        render: Callable[[Claim], list[Outgoing]],
        report: DeliveryReport,
    ) -> None:
        """Feed the queue chunk by chunk (one pass over the subscribers: a row that failed
        waits for the next run) until nothing is due, the run stops or no sender is left."""
        loop = asyncio.get_running_loop()
        busy = 0
        ahead: asyncio.Future[Claim | None] | None = loop.run_in_executor(claims, self._claim, 0)
        claim: Claim | None = None  # claimed, not queued yet
        try:
            while ahead is not None:
                claim, ahead = await ahead, None
                if claim is None:
                    return  # nothing is due
                if not claim.rows:  # all due rows are locked by another process claiming them now
                    busy += 1
                    if busy > 50 or self.stop.is_set():
                        return
                    await asyncio.sleep(0.1)
                    ahead = loop.run_in_executor(claims, self._claim, claim.after)
                    continue
                busy = 0
                if self.stop.is_set():
                    return
                ahead = loop.run_in_executor(claims, self._claim, claim.after)  # claim on meanwhile
                outgoing = await loop.run_in_executor(renders, render, claim)
                # queue it once the senders are nearly through what they have (or all gone)
                while queue.qsize() > self._senders and not self.stop.is_set():
                    low.clear()
                    waiter = asyncio.ensure_future(low.wait())
                    await asyncio.wait([waiter, *senders], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if all(task.done() for task in senders):
                        return
                if self.stop.is_set():
                    return
                for item in outgoing:
                    queue.put_nowait(item)
                claim = None
                if all(task.done() for task in senders):
                    return
        finally:  # claimed (or rendered) but never queued: give it back
            unsent = [claim] if claim is not None and claim.rows else []
            if ahead is not None:
                later = await ahead
                if later is not None and later.rows:
                    unsent.append(later)
            if unsent:
                ids = [i for c in unsent for i in c.delivery_ids]
                self._give_back(ids, report, emails=sum(len(c.rows) for c in unsent))

    def _claim(self, after: int) -> Claim | None:
        """Claim the due rows of the next subscribers after ``after`` (None: nothing is due)."""
        at = self.clock()
        with store.transaction(self.engine) as session:
            claimed, anything = store.claim_due(
                session=session,
                at=at,
                lease_until=at + timedelta(seconds=self.settings.email.lease),
                worker=self.worker,
                max_subscribers=CLAIM_SUBSCRIBERS,
                after=after,
            )
        if not anything:
            return None
        return Claim(claimed, max(claimed, default=after), at)

    def _give_back(self, delivery_ids: list[int], report: DeliveryReport, *, emails: int) -> None:
        """Claimed, not tried: back to pending, no attempt counted."""
        with store.transaction(self.engine) as session:
            store.release(session=session, delivery_ids=delivery_ids, worker=self.worker)
        report.not_tried += emails
        event(log, "deliver.released", emails=emails, reason="not tried in this run; still pending")

    def _sent(self, accepted: list[tuple[Outgoing, datetime]], report: DeliveryReport) -> None:
        """The server accepted these emails: record that in one short transaction, one
        ``sent_marks`` row each (the rows become ``sent`` when the marks are folded,
        :meth:`_fold`)."""
        with self.engine.begin() as conn:
            store.record_sent(
                session=conn,
                worker=self.worker,
                marks=[
                    store.NewSentMark(item.subscriber_id, item.mail.message_id, at, len(item.delivery_ids))
                    for item, at in accepted
                ],
            )
        for item, _ in accepted:
            report.emails += 1
            report.papers += item.papers
            event(log, "deliver.sent", to=item.email, papers=item.papers, message_id=item.mail.message_id)

    def _fold(self) -> None:
        with store.transaction(self.engine) as session:
            folded = store.fold_sent(session=session, worker=self.worker)
        for subscriber_id, rows in folded.lost:  # our lease ran out and another process took over
            event(log, "deliver.lease_lost", level=logging.WARNING, subscriber=subscriber_id, rows=rows)

    def _failed(self, item: Outgoing, exc: SendError, report: DeliveryReport) -> None:
        email = self.settings.email
        attempt = item.attempts + 1
        permanent = not exc.temporary
        final = permanent or attempt >= email.max_attempts
        delay = retry_delay(attempt, first=email.retry_after, cap=email.retry_max, rng=self.rng)
        retry_at = self.clock() + timedelta(seconds=delay)
        with store.transaction(self.engine) as session:
            store.mark_failed_attempt(
                session=session,
                delivery_ids=item.delivery_ids,
                worker=self.worker,
                error=str(exc),
                permanent=permanent,
                retry_at=retry_at,
                max_attempts=email.max_attempts,
            )
        (report.failed if final else report.retrying).append((item.email, str(exc)))
        event(
            log,
            "deliver.failed",
            level=logging.WARNING,
            to=item.email,
            reason=str(exc),
            papers=item.papers,
            attempt=attempt,
            retry="never" if final else retry_at.isoformat(timespec="seconds"),
        )
