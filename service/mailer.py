"""How finished emails leave paperboy: transports, and the senders that drive them.

Two small protocols:

- a :class:`Transport` opens a :class:`Connection` that sends one
  :class:`~service.message.Mail` at a time, raising :class:`SendError` with
  ``temporary`` telling whether trying again later may help (4xx, network) or
  not (5xx). :class:`MaildirTransport` writes each message as a file in a
  Maildir (``tmp/`` then ``new/``, so a reader never sees half a message; no
  server needed: the default, and what the demo uses);
  :class:`service.smtp.SmtpTransport` talks to an SMTP server.
- a :class:`Sender` sends a delivery run's emails: it takes them from a
  queue until it says stop (None) and reports each outcome. An
  :class:`InProcessSender` runs connections of a transport in the run's own
  event loop (a maildir, or any transport a test hands in);
  :class:`service.courier.CourierSender` runs the SMTP sessions in a child
  process. :func:`build_sender` picks one from the configuration.
"""

from __future__ import annotations

import asyncio
import mailbox
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from .message import Mail
from .settings import Settings


class SendError(Exception):
    """A send that failed. ``temporary``: trying again later may help (4xx, network);
    ``network``: the connection is gone, stop using this one; ``config``: the fault is
    paperboy's setup, not the message nor the recipient (the login was refused, TLS does
    not fit the server, the server cannot be reached): no other send of the run can
    succeed, so the run stops, and the message names what to fix."""

    def __init__(self, message: str, *, temporary: bool, network: bool = False, config: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary or config
        self.network = network or config
        self.config = config


class Connection(Protocol):
    async def send(self, mail: Mail) -> None: ...


class Transport(Protocol):
    def connect(self) -> AbstractAsyncContextManager[Connection]: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        try:
            make_maildir(self.path)
            box = mailbox.Maildir(self.path, create=False)
        except OSError as exc:  # reported by the first send, as a server that cannot be reached
            yield _Unusable(
                SendError(
                    f"cannot make the maildir {self.path} ({exc.strerror or exc}); fix email.maildir",
                    temporary=True,
                    config=True,
                )
            )
            return
        yield _MaildirConnection(box)


class _MaildirConnection:
    def __init__(self, box: mailbox.Maildir) -> None:
        self.box = box

    async def send(self, mail: Mail) -> None:
        try:
            self.box.add(mail.data)
        except PermissionError as exc:
            raise SendError(
                f"cannot write to the maildir: {exc}; fix email.maildir or its permissions",
                temporary=True,
                config=True,
            ) from exc
        except OSError as exc:
            raise SendError(f"cannot write to the maildir: {exc}", temporary=True, network=True) from exc


def make_maildir(path: Path) -> None:
    """The maildir's folders, its parents included (``mailbox.Maildir`` makes only the last
    folder, and none of tmp/new/cur in a folder that exists already)."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)


class _Unusable:
    """A connection that could not be made: every send raises why."""

    def __init__(self, error: SendError) -> None:
        self.error = error

    async def send(self, mail: Mail) -> None:
        raise self.error


class TokenBucket:
    """At most ``rate`` messages a second on average, shared by all connections.

    The bucket holds up to ``max(1, rate)`` tokens (a burst of one second's
    worth); each message takes one, waiting until it has refilled. It starts
    with one token and starts filling at the first :meth:`take`, not when it
    is made: the time the sessions spend connecting is no credit for a burst.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.tokens = 1.0
        self.last: float | None = None  # when the tokens were counted; None: never taken from
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        if self.rate is None:
            return
        async with self.lock:
            while True:
                now = self.clock()
                if self.last is not None:
                    self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1 - 1e-9:  # rounding must not leave it one ulp short forever
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                await self.sleep((1 - self.tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What a sender tells the delivery run, email by email."""

    took: Callable[[], None]  # an email was taken from the queue
    sent: Callable[[Mail], None]  # the server accepted it
    failed: Callable[[Mail, SendError], Awaitable[None]]  # it did not
    stopped: Callable[[], bool]  # the run stops: start no other send


class Sender(Protocol):
    """Sends the emails of one delivery run.

    :meth:`run` takes emails from ``queue`` until it takes None (or
    ``outcomes.stopped()``), reports each email's outcome, and returns when
    done. What it took and did not try goes back into the queue. ``lost``
    then holds the emails whose outcome is unknown (sent, maybe).
    """

    connections: int  # emails sent at once: the run keeps about this many queued
    lost: list[Mail]

    async def run(self, queue: asyncio.Queue[Mail | None], outcomes: Outcomes) -> None: ...


class InProcessSender:
    """``connections`` connections of ``transport``, in the delivery run's event loop."""

    def __init__(self, transport: Transport, *, connections: int = 1, rate: float | None = None) -> None:
        self.transport, self.connections, self.rate = transport, connections, rate
        self.lost: list[Mail] = []

    async def run(self, queue: asyncio.Queue[Mail | None], outcomes: Outcomes) -> None:
        bucket = TokenBucket(self.rate)
        await asyncio.gather(
            *(
                send_from_queue(
                    queue,
                    self.transport,
                    mail=_itself,
                    bucket=bucket,
                    stopped=outcomes.stopped,
                    took=outcomes.took,
                    sent=outcomes.sent,
                    failed=outcomes.failed,
                )
                for _ in range(self.connections)
            )
        )


def _itself(mail: Mail) -> Mail:
    return mail


def build_sender(settings: Settings) -> Sender:
    """The sender the configuration asks for: SMTP sessions in a child process, or a maildir."""
    email = settings.email
    if email.transport == "smtp":
        from .courier import CourierSender

        return CourierSender(email.smtp, sender=email.from_)
    return InProcessSender(MaildirTransport(email.maildir))


Item = TypeVar("Item")


async def send_from_queue(
    queue: asyncio.Queue[Item | None],
    transport: Transport,
    *,
    mail: Callable[[Item], Mail],
    bucket: TokenBucket,
    stopped: Callable[[], bool],
    took: Callable[[], None],
    sent: Callable[[Item], None],
    failed: Callable[[Item, SendError], Awaitable[None]],
) -> None:
    """One connection: send ``mail(item)`` for each item the queue holds until it says
    stop (None, which it leaves in the queue for the other connections),
    ``stopped()`` turns true (the item taken goes back to the queue), or the
    server cannot be reached twice in a row (the rest is left to the other
    connections), or an error of the setup (``SendError.config``). ``took()``
    after each item taken; ``sent(item)`` once the server accepted it,
    ``failed(item, error)`` when it did not."""
    network_errors = 0
    async with transport.connect() as connection:
        while not stopped():
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)  # the others stop on it too
                return
            took()
            if stopped():
                queue.put_nowait(item)  # not tried
                return
            await bucket.take()
            try:
                await connection.send(mail(item))
            except SendError as exc:
                await failed(item, exc)
                if exc.config:
                    return  # no send of this run can succeed: the run stops
                if exc.network:
                    network_errors += 1
                    if network_errors >= 2:
                        return  # reconnecting failed too
                continue
            network_errors = 0
            sent(item)
