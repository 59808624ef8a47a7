"""The delivery run: claim due deliveries, compose, send, record each outcome, retry.

Matching (:mod:`service.match`) writes one ``pending`` ``deliveries`` row per (subscriber,
paper) that matched, with its terms and score. Delivery works in chunks of subscribers, as
a pipeline: one thread claims the next chunk while another renders the one before and the
senders, taking emails from a queue, send the one before that. The senders are a
:class:`~service.mailer.Sender`: for SMTP, sessions in a child process
(:mod:`service.courier`: here they would wait for the interpreter while a chunk renders);
a maildir is written in this event loop (:class:`~service.mailer.InProcessSender`).

1. claim (one short transaction): the due rows of a few subscribers become
   ``sending``, leased to this process (``claimed_by``, ``lease_until``), and
   come back from the same statement (``RETURNING``) for rendering.
   On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``, so two
   processes never claim the same row; on SQLite writers take turns.
2. compose one email per subscriber (:mod:`service.compose`) with all their claimed papers
   (best first; over ``max_papers`` the rest are counted and linked to the page). A run
   with nothing due ends after this first claim: no sending process is started.
3. send, over ``email.smtp.concurrency`` connections at no more than
   ``email.smtp.rate`` messages a second, and record each outcome at once:
   accepted -> a *sent mark* (one row in ``sent_marks``; a thread commits
   the marks gathered since its last commit in one insert), which is folded
   into the rows (``sent``) every ``sentbook.FOLD_EVERY`` emails, in one statement; a
   temporary error (4xx, network, timeout) -> ``pending``
   again, due after an exponential backoff with jitter (``retry_after``
   doubling up to ``retry_max``); a permanent error (5xx, the recipient
   refused) or the last of ``max_attempts`` -> ``failed``, with the reason.
   Rows claimed but not tried (the run stopped, the server went away) go
   back to ``pending`` without an attempt counted. An error of the setup
   (a refused login, TLS that does not fit, a server that cannot be reached:
   ``SendError.config``) is no attempt either: the run stops at the first,
   leaves every row pending, and reports what to fix (``DeliveryReport.halted``).

A row in ``sending`` whose lease has run out belongs to a process that died:
it is due again, but every claim first folds the sent marks of every
process, so an email whose mark was committed is never sent again. That
leaves one window in which a pair can be delivered twice: from the moment
the sending process writes a message's final dot (the server has it whole
and delivers it, whoever is left to hear its answer) until the mark commits:
the server's answer to the end of DATA, however long it takes, then the
answer on its way from the sending process and a commit or two (a few
milliseconds). When the main process dies, the sending process sees its pipe
close and leaves at once, mid-message, so a message not finished by then
never arrives (tests/test_hostile_window.py kills it inside the window). When the sending
process dies alone, the emails it held stay ``sending`` until their lease
runs out: the ones among them the server had accepted arrive twice. The
retried message carries the same ``Message-ID``, so mail clients can drop it.

The queries behind each step are :mod:`service.store.outbox`'s.
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

from sqlalchemy import Engine

from . import store
from .compose import Composer
from .log import event
from .mailer import Outcomes, Sender, SendError
from .message import Mail
from .render import Renderer
from .sentbook import SentBook
from .settings import Settings

log = logging.getLogger("paperboy.delivery")


def worker_id() -> str:
    """Who holds a claim: host, process and a random tag (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(attempt: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Seconds before retrying after failed attempt ``attempt`` (1-based): ``first``,
    doubling each time up to ``cap``, times a random factor in [0.5, 1) so that
    many failed deliveries do not all come back at the same moment."""
    return min(cap, first * 2 ** max(0, attempt - 1)) * rng.uniform(0.5, 1.0)


@dataclass(slots=True)
class DeliveryReport:
    emails: int = 0
    papers: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason): failed for good
    retrying: list[tuple[str, str]] = field(default_factory=list)  # (address, reason): due again later
    not_tried: int = 0  # emails claimed and given back (the run stopped or the server went away)
    halted: str | None = None  # an error of the setup stopped the run (what to fix)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.retrying and self.halted is None

    @property
    def problems(self) -> list[str]:
        """What went wrong, a phrase each (empty when ok)."""
        out = [f"delivery stopped: {self.halted}"] if self.halted else []
        if self.failed:
            out.append(f"{len(self.failed)} email(s) failed for good, first: {self.failed[0][1]}")
        if self.retrying:
            out.append(f"{len(self.retrying)} email(s) deferred to a retry, first: {self.retrying[0][1]}")
        return out


CLAIM_SUBSCRIBERS = 50  # subscribers claimed per chunk


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
class DeliveryRun:
    """One delivery run's wiring: the store, who sends (:class:`~service.mailer.Sender`),
    the templates, the settings and the clock."""

    engine: Engine
    sender: Sender
    renderer: Renderer
    settings: Settings
    clock: Callable[[], datetime]
    worker: str = field(default_factory=worker_id)
    rng: random.Random = field(default_factory=random.Random)
    stop: threading.Event = field(default_factory=threading.Event)
    halted: threading.Event = field(default_factory=threading.Event)  # an error of the setup

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.halted.is_set()

    def run(self) -> DeliveryReport:
        """Claim, compose and send chunk after chunk until nothing is due (or the server is away)."""
        report = DeliveryReport()
        try:
            asyncio.run(self._run(report))
        finally:  # whatever the server accepted is marked sent, even when the run broke off
            self._fold()
        return report

    async def _run(self, report: DeliveryReport) -> None:
        """The pipeline. One thread claims chunk after chunk, another composes each claimed
        chunk into a queue, the sender takes emails from the queue over its connections,
        and a fourth thread records what the server accepted. So the next chunk is claimed
        while one is composed and another sent, and the sender never waits for a chunk to
        finish."""
        sender = self.sender
        composer = Composer(
            self.engine, self.renderer, self.settings, broken=functools.partial(self._broken, report=report)
        )
        queue: asyncio.Queue[Mail | None] = asyncio.Queue()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-claim") as claims,
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-compose") as composes,
            ThreadPoolExecutor(1, thread_name_prefix="paperboy-mark") as marks,
        ):
            book = SentBook(functools.partial(self._sent, report=report), self._fold, marks)
            low = asyncio.Event()  # the queue is down to one email per connection: time to add a chunk

            def took() -> None:
                if queue.qsize() <= sender.connections:
                    low.set()

            def sent(mail: Mail) -> None:
                book.add(mail, self.clock())

            async def failed(mail: Mail, exc: SendError) -> None:
                await asyncio.get_running_loop().run_in_executor(marks, self._failed, mail, exc, report)

            outcomes = Outcomes(took=took, sent=sent, failed=failed, stopped=self._stopping)
            first = await asyncio.get_running_loop().run_in_executor(claims, self._claim, 0)
            if first is None:
                return  # nothing is due (a quiet run from cron)
            sending = asyncio.create_task(sender.run(queue, outcomes))
            try:
                await self._produce(queue, low, sending, claims, composes, composer, report, first)
                queue.put_nowait(None)  # no more: the sender stops when it takes it
                await sending
            finally:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
                left = []
                while not queue.empty():
                    mail = queue.get_nowait()
                    if mail is not None:
                        left.append(mail)
                if left:  # claimed, not tried: the run stopped or the server went away
                    self._give_back([i for mail in left for i in mail.delivery_ids], report, emails=len(left))
                if sender.lost:  # the sending process died mid-send
                    event(
                        log,
                        "deliver.lost",
                        level=logging.ERROR,
                        emails=len(sender.lost),
                        reason="the sending process ended before answering; the rows stay sending"
                        " and are due again when their lease runs out (an email may then arrive twice)",
                    )
                await book.drain()  # what the server accepted is recorded before the run ends

    async def _produce(
        self,
        queue: asyncio.Queue[Mail | None],
        low: asyncio.Event,
        sending: asyncio.Task[None],
        claims: ThreadPoolExecutor,
        composes: ThreadPoolExecutor,
        composer: Composer,
        report: DeliveryReport,
        first: Claim,
    ) -> None:
        """Feed the queue chunk by chunk, from the ``first`` claim on (one pass over the
        subscribers: a row that failed waits for the next run) until nothing is due, the run
        stops or the sender is done."""
        loop = asyncio.get_running_loop()
        busy = 0
        claimed: asyncio.Future[Claim | None] = loop.create_future()
        claimed.set_result(first)
        ahead: asyncio.Future[Claim | None] | None = claimed
        claim: Claim | None = None  # claimed, not queued yet
        try:
            while ahead is not None:
                claim, ahead = await ahead, None
                if claim is None:
                    return  # nothing is due
                if not claim.rows:  # all due rows are locked by another process claiming them now
                    busy += 1
                    if busy > 50 or self._stopping():
                        return
                    await asyncio.sleep(0.1)
                    ahead = loop.run_in_executor(claims, self._claim, claim.after)
                    continue
                busy = 0
                if self._stopping():
                    return
                ahead = loop.run_in_executor(claims, self._claim, claim.after)  # claim on meanwhile
                outgoing = await loop.run_in_executor(
                    composes, functools.partial(composer, claim.rows, at=claim.at)
                )
                # queue it once the senders are nearly through what they have (or all gone)
                while queue.qsize() > self.sender.connections and not self._stopping():
                    low.clear()
                    waiter = asyncio.ensure_future(low.wait())
                    await asyncio.wait([waiter, sending], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if sending.done():
                        return
                if self._stopping():
                    return
                for mail in outgoing:
                    queue.put_nowait(mail)
                claim = None
                if sending.done():
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
            subscribers, anything = store.claim_subscribers(
                session=session,
                at=at,
                lease_until=at + timedelta(seconds=self.settings.email.lease),
                worker=self.worker,
                max_subscribers=CLAIM_SUBSCRIBERS,
                after=after,
            )
        if not anything:
            return None
        with store.reading(self.engine) as session:  # after the commit: the write lock is free
            claimed = store.claimed_rows(session=session, worker=self.worker, subscriber_ids=subscribers)
        return Claim(claimed, max(claimed, default=after), at)

    def _give_back(self, delivery_ids: list[int], report: DeliveryReport, *, emails: int) -> None:
        """Claimed, not tried: back to pending, no attempt counted."""
        with store.transaction(self.engine) as session:
            store.release(session=session, delivery_ids=delivery_ids, worker=self.worker)
        report.not_tried += emails
        event(log, "deliver.released", emails=emails, reason="not tried in this run; still pending")

    def _sent(self, accepted: list[tuple[Mail, datetime]], report: DeliveryReport) -> None:
        """The server accepted these emails: record that in one short transaction, one
        ``sent_marks`` row each (the rows become ``sent`` when the marks are folded,
        :meth:`_fold`)."""
        with self.engine.begin() as conn:
            store.record_sent(
                session=conn,
                worker=self.worker,
                marks=[
                    store.NewSentMark(mail.subscriber_id, mail.message_id, at, len(mail.delivery_ids))
                    for mail, at in accepted
                ],
            )
        for mail, _ in accepted:
            report.emails += 1
            report.papers += mail.papers
            event(log, "deliver.sent", to=mail.to, papers=mail.papers, message_id=mail.message_id)

    def _fold(self) -> None:
        with store.transaction(self.engine) as session:
            folded = store.fold_sent(session=session, worker=self.worker)
        for subscriber_id, rows in folded.lost:  # our lease ran out and another process took over
            event(log, "deliver.lease_lost", level=logging.WARNING, subscriber=subscriber_id, rows=rows)

    def _broken(
        self, rows: list[store.OutboxRow], address: str, reason: str, *, report: DeliveryReport
    ) -> None:
        """(On the compose thread.) A subscriber's email could not be made: their rows fail
        for good, with the reason; the run goes on for everyone else."""
        with store.transaction(self.engine) as session:
            store.mark_failed_attempt(
                session=session,
                delivery_ids=[r.id for r in rows],
                worker=self.worker,
                error=reason,
                permanent=True,
                retry_at=self.clock(),
                max_attempts=self.settings.email.max_attempts,
            )
        report.failed.append((address, reason))
        event(
            log,
            "deliver.failed",
            level=logging.WARNING,
            to=address,
            reason=reason,
            papers=len(rows),
            retry="never",
        )

    def _failed(self, mail: Mail, exc: SendError, report: DeliveryReport) -> None:
        if exc.config:  # not the message's fault: no attempt counted, and the run stops
            with store.transaction(self.engine) as session:
                store.release(session=session, delivery_ids=mail.delivery_ids, worker=self.worker)
            report.not_tried += 1
            if not self.halted.is_set():
                self.halted.set()
                report.halted = str(exc)
                event(
                    log,
                    "deliver.halted",
                    level=logging.ERROR,
                    reason=str(exc),
                    hint="fix the configuration; the deliveries stay pending, no attempt counted",
                )
            return
        email = self.settings.email
        attempt = mail.attempts + 1
        permanent = not exc.temporary
        final = permanent or attempt >= email.max_attempts
        delay = retry_delay(attempt, first=email.retry_after, cap=email.retry_max, rng=self.rng)
        retry_at = self.clock() + timedelta(seconds=delay)
        with store.transaction(self.engine) as session:
            store.mark_failed_attempt(
                session=session,
                delivery_ids=mail.delivery_ids,
                worker=self.worker,
                error=str(exc),
                permanent=permanent,
                retry_at=retry_at,
                max_attempts=email.max_attempts,
            )
        (report.failed if final else report.retrying).append((mail.to, str(exc)))
        event(
            log,
            "deliver.failed",
            level=logging.WARNING,
            to=mail.to,
            reason=str(exc),
            papers=mail.papers,
            attempt=attempt,
            retry="never" if final else retry_at.isoformat(timespec="seconds"),
        )
