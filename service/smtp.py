"""SMTP (aiosmtplib): one session that sends message after message.

STARTTLS when the server offers it unless ``starttls`` demands (true) or
forbids (false) it; implicit TLS with ``tls: true``; login when a username
is set; a timeout on every step. A session is opened on first use and again
after a disconnect, and reused for all its messages. A message with 8-bit
parts goes with ``BODY=8BITMIME``, or quoted-printable to a server that does
not offer it.

Errors of the setup are told apart from the weather (:func:`setup_error`): a
refused login, TLS that does not fit the server, an untrusted certificate, a
server that cannot be reached raise :class:`SendError` with ``config``, and
say which key to look at; a 4xx answer stays a temporary error.

Delivery runs use this in the sending process (:mod:`service.courier`), not
in the main one; importing aiosmtplib is left to the commands that send.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parseaddr

import aiosmtplib

from .mailer import Connection, SendError
from .message import Mail
from .settings import Smtp


class SmtpTransport:
    """A :class:`service.mailer.Transport` to the configured SMTP server."""

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
            timeout=c.timeout,
        )
        connection = SmtpConnection(client, self.envelope_from, c)
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


SESSION_CODES = (530, 534, 535, 538)  # authentication required / refused, encryption required


def setup_error(exc: BaseException, config: Smtp) -> SendError | None:
    """What a failure to open the session says about the configuration (None: it is weather,
    a 4xx greeting): a :class:`SendError` with ``config``, whose message names the keys to
    look at."""
    problem = _setup_problem(exc, config)
    return None if problem is None else SendError(problem, temporary=True, config=True)


def _setup_problem(exc: BaseException, config: Smtp) -> str | None:
    where = f"{config.host}:{config.port}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or (
        isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code in SESSION_CODES
    ):
        code, said = getattr(exc, "code", ""), str(getattr(exc, "message", exc))
        fix = (
            "the server wants TLS first: leave email.smtp.starttls unset (or true)"
            if "TLS" in said.upper()
            else "check email.smtp.username and email.smtp.password"
        )
        return f"{where} refused the session ({code} {said}); {fix}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 400 <= exc.code < 500:
            return None  # busy, try later
        return f"{where} refused the connection ({exc.code} {exc.message}); check email.smtp.host"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the TLS certificate of {where} is not trusted ({text}); give the server a certificate "
            "for this host name, or set email.smtp.validate_certs: false for a private server"
        )
    if isinstance(exc, ssl.SSLError) or "SSL" in text:
        return (
            f"TLS failed with {where} ({text}); email.smtp.tls: true is implicit TLS (port 465), "
            "for port 587 or 25 set starttls instead"
        )
    if "STARTTLS" in text:
        return (
            f"{where} does not offer STARTTLS, which email.smtp.starttls: true demands; use the "
            "server's TLS port with tls: true, or leave starttls unset"
        )
    return (
        f"cannot connect to {where} ({text}); check email.smtp.host and email.smtp.port, and that the "
        "server is running"
    )


class SmtpConnection:
    """One SMTP session, opened on first use and again after a disconnect."""

    def __init__(self, client: aiosmtplib.SMTP, envelope_from: str, config: Smtp) -> None:
        self.client = client
        self.envelope_from = envelope_from
        self.config = config

    async def open(self) -> None:
        """Connect, TLS, EHLO and login; a :class:`SendError` when that fails. (The login is
        a step of its own, not aiosmtplib's login on connect: a failed connect closes its TLS
        transport gracefully, and the run's event loop could end before the server's answer,
        leaving the socket to the garbage collector; :meth:`close` aborts it.)"""
        try:
            await self.client.connect()
            if self.config.username is not None:
                await self.client.login(self.config.username, self.config.password or "")
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            error = setup_error(exc, self.config)
            if error is None:
                raise SendError(f"network: {exc}", temporary=True, network=True) from exc
            raise error from exc

    async def send(self, mail: Mail) -> None:
        if not self.client.is_connected:
            await self.open()
        try:
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
            if exc.code in SESSION_CODES:  # about the session, not this message
                raise setup_error(exc, self.config) or SendError(str(exc), temporary=True) from exc
            raise SendError(f"{exc.code} {exc.message}", temporary=400 <= exc.code < 500) from exc
        except _NETWORK_ERRORS as exc:
            await self.close()
            raise SendError(f"network: {exc or type(exc).__name__}", temporary=True, network=True) from exc
        except aiosmtplib.SMTPException as exc:
            await self.close()
            raise SendError(str(exc), temporary=True) from exc
        except (ValueError, UnicodeError) as exc:  # this recipient or message, not the session
            await self.close()  # whatever was said, the next email starts a clean session
            raise SendError(f"cannot send to {mail.to!r}: {exc}", temporary=False) from exc

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
        """QUIT, then close the socket before returning.

        After QUIT (or a session too broken to QUIT) nothing is left to say, so the
        transport is aborted rather than closed: a plain close of a TLS session
        waits for the server's close_notify, and the event loop of a run could end
        first and leave the socket to the garbage collector (a ResourceWarning in
        whatever runs next). The socket is released on the loop's next turn, which
        this waits for."""
        transport = self.client.transport
        try:
            if self.client.is_connected:
                await self.client.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass  # a session that cannot even QUIT is broken: it is dropped below all the same
        finally:
            self.client.close()
            if isinstance(transport, asyncio.Transport):
                transport.abort()
                await asyncio.sleep(0)  # connection_lost runs, the socket is closed
