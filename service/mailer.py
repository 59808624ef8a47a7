"""Transports: how a finished message leaves paperboy.

One small protocol, two implementations, chosen in ``cli.py`` from the
configuration and passed down:

- :class:`SmtpTransport` (aiosmtplib): STARTTLS when the server offers it
  unless ``starttls`` demands (true) or forbids (false) it; implicit TLS with
  ``tls: true``; login when a username is set; a timeout on every step. Each
  worker holds one connection and reuses it for all its messages. A message
  with 8-bit parts goes with ``BODY=8BITMIME``, or quoted-printable to a
  server that does not offer it.
- :class:`MaildirTransport`: each message becomes a file in a Maildir
  (``tmp/`` then ``new/``, so a reader never sees half a message). No server
  needed: the default, and what the demo uses.

A connection's ``send`` raises :class:`SendError` with ``temporary`` telling
whether trying again later may help (4xx, network) or not (5xx).
"""

from __future__ import annotations

import asyncio
import mailbox
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

from .render import Mail
from .settings import Smtp


class SendError(Exception):
    def __init__(self, message: str, *, temporary: bool, network: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.network = network  # the connection is gone: stop using this worker


class Connection(Protocol):
    async def send(self, mail: Mail) -> None: ...


class Transport(Protocol):
    def connect(self) -> AbstractAsyncContextManager[Connection]: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        yield _MaildirConnection(mailbox.Maildir(self.path, create=True))


class _MaildirConnection:
    def __init__(self, box: mailbox.Maildir) -> None:
        self.box = box

    async def send(self, mail: Mail) -> None:
        try:
            self.box.add(mail.data)
        except OSError as exc:
            raise SendError(f"cannot write to the maildir: {exc}", temporary=True, network=True) from exc


class SmtpTransport:
    def __init__(self, config: Smtp, *, sender: str) -> None:
        self.config = config
        self.sender = sender
        self.envelope_from = parseaddr(sender)[1]

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.tls,
            start_tls=c.starttls,
            validate_certs=c.validate_certs,
            username=c.username,
            password=c.password,
            timeout=c.timeout,
        )
        connection = _SmtpConnection(client, self.envelope_from)
        try:
            yield connection
        finally:
            await connection.close()


_NETWORK_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    OSError,
    asyncio.TimeoutError,
)


class _SmtpConnection:
    """One SMTP session, opened on first use and again after a disconnect."""

    def __init__(self, client: aiosmtplib.SMTP, envelope_from: str) -> None:
        self.client = client
        self.envelope_from = envelope_from

    async def send(self, mail: Mail) -> None:
        try:
            if not self.client.is_connected:
                await self.client.connect()
            data, options = mail.data, []
            if mail.smtputf8 or not self.envelope_from.isascii():
                options.append("SMTPUTF8")
            if mail.eight_bit:
                await self._greet()
                if self.client.supports_extension("8BITMIME"):
                    options.append("BODY=8BITMIME")
                else:
                    data = mail.seven_bit()
            await self.client.sendmail(self.envelope_from, [mail.to], data, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reasons = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise SendError(f"refused: {reasons}", temporary=all(400 <= c < 500 for c in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise SendError(f"{exc.code} {exc.message}", temporary=400 <= exc.code < 500) from exc
        except _NETWORK_ERRORS as exc:
            await self.close()
            raise SendError(f"network: {exc or type(exc).__name__}", temporary=True, network=True) from exc
        except aiosmtplib.SMTPException as exc:
            await self.close()
            raise SendError(str(exc), temporary=True) from exc

    async def _greet(self) -> None:
        """EHLO (HELO if the server knows no EHLO) unless done: what the server supports."""
        if self.client.is_ehlo_or_helo_needed:
            try:
                await self.client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await self.client.helo()

    async def _reset(self) -> None:
        if self.client.is_connected:
            try:
                await self.client.rset()
            except aiosmtplib.SMTPException:
                await self.close()

    async def close(self) -> None:
        transport = self.client.transport
        try:
            if self.client.is_connected:
                await self.client.quit()
        except (aiosmtplib.SMTPException, OSError):
            # A session that cannot even QUIT is broken: drop what is still buffered
            # (a plain close would wait for the peer to read it, maybe forever, and
            # leave the socket open past the run).
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        finally:  # the socket goes too, even when the session was already half gone
            self.client.close()


class TokenBucket:
    """At most ``rate`` messages a second on average, shared by all connections.

    The bucket holds up to ``max(1, rate)`` tokens (a burst of one second's
    worth); each message takes one, waiting until it has refilled.
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
        self.last = clock()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        if self.rate is None:
            return
        async with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1 - 1e-9:  # rounding must not leave it one ulp short forever
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                await self.sleep((1 - self.tokens) / self.rate)


class _Item(Protocol):
    @property
    def mail(self) -> Mail: ...


async def send_from_queue(
    queue: asyncio.Queue[Any],
    transport: Transport,
    *,
    bucket: TokenBucket,
    stopped: Callable[[], bool],
    took: Callable[[], None],
    sent: Callable[[Any], None],
    failed: Callable[[Any, SendError], Awaitable[None]],
) -> None:
    """One connection: send the ``mail`` of each item the queue holds until it says stop
    (None), ``stopped()`` turns true (the item taken goes back to the queue), or the
    server cannot be reached twice in a row (the rest is left to the other senders).
    ``took()`` after each item taken; ``sent(item)`` once the server accepted it,
    ``failed(item, error)`` when it did not."""
    network_errors = 0
    async with transport.connect() as connection:
        while not stopped():
            item: _Item | None = await queue.get()
            if item is None:
                return
            took()
            if stopped():
                queue.put_nowait(item)  # not tried
                return
            await bucket.take()
            try:
                await connection.send(item.mail)
            except SendError as exc:
                await failed(item, exc)
                if exc.network:
                    network_errors += 1
                    if network_errors >= 2:
                        return  # reconnecting failed too
                continue
            network_errors = 0
            sent(item)
