"""The courier: a delivery run's SMTP sessions, in a child process of their own.

A delivery run claims, renders and records in threads of the main process.
Python runs one thread of a process at a time, so an event loop sharing the
process with them waits its turn after every reply the SMTP server sends,
and each email waits four times (MAIL, RCPT, DATA, the message). Measured on
the delivery benchmark's machine: a thread rendering emails half of the time
cut plain aiosmtplib's throughput to 61-72%; the same thread beside senders
in a child process left them at 79-105%. So the sessions run here, in
``python -m service.courier``, which does nothing else.

The parent talks to the child over its stdin and stdout, in frames: two
lengths (4 bytes each, big-endian), a JSON header, then a body.

parent -> child
  the first frame: ``{"smtp": {...}, "sender": ...}`` (the sessions to open are ``smtp.concurrency``)
  (the password goes through the pipe, never on a command line);
  an email: ``{"seq": n, "to": ..., "message_id": ..., "eight_bit": b}``,
  the message as the body; ``{"end": true}``: no more emails, send what you
  have; ``{"stop": true}``: the run stops, finish the sends under way and
  start no other.
child -> parent, one frame per email
  ``{"seq": n, "sent": true}`` (the server accepted it);
  ``{"seq": n, "error": ..., "temporary": b, "network": b, "config": b}``;
  ``{"seq": n, "untried": true}`` (given back: stopped, or no session left);
  ``{"gone": true}`` once every session has given up (the server is away);
  ``{"done": true}`` last, after "end" or "stop".

The child ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process
group; systemd signals every process of a service): its parent decides.
The parent's stdin closing without a "stop" means it died: the child exits
at once, mid-message if need be, so that a message not finished by then
never arrives (SMTP delivers a message only at the end of its DATA; one whose
final dot was written is the server's, answered or not: the window for a
duplicate that :mod:`service.delivery` describes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
from dataclasses import dataclass
from typing import Any

from . import children
from .mailer import Outcomes, SendError, TokenBucket, send_from_queue
from .message import Mail
from .settings import Smtp

log = logging.getLogger("paperboy.courier")
_LENGTHS = struct.Struct("!II")
WINDOW_PER_SESSION = 4  # emails handed to the child per session and not answered yet


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LENGTHS.pack(len(head), len(body)) + head + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame (raises ``asyncio.IncompleteReadError`` at the end of the stream)."""
    head, body = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
    header = json.loads(await reader.readexactly(head))
    return header, await reader.readexactly(body) if body else b""


# ---------------------------------------------------------------- the parent's side


class CourierError(Exception):
    """The child process ended before it said it was done (its error is on stderr)."""


class CourierSender:
    """A :class:`~service.mailer.Sender` whose SMTP sessions run in a child process:
    :meth:`run` returns once the child is done; the emails it handed back untried
    are back in the queue; ``lost`` holds those it never answered for (it died:
    maybe sent, maybe not)."""

    def __init__(self, smtp: Smtp, *, sender: str) -> None:
        self.smtp, self.sender = smtp, sender
        self.connections = smtp.concurrency
        self.in_flight: dict[int, Mail] = {}  # handed to the child, not answered yet
        self.lost: list[Mail] = []
        self.process: asyncio.subprocess.Process | None = None

    async def run(self, queue: asyncio.Queue[Mail | None], outcomes: Outcomes) -> None:
        child = await asyncio.create_subprocess_exec(
            *children.command("service.courier"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=children.environment(),
        )
        assert child.stdin is not None and child.stdout is not None
        self.process, writer = child, child.stdin
        done = False
        forward: asyncio.Task[None] | None = None
        try:
            writer.write(frame({"smtp": self.smtp.model_dump(), "sender": self.sender}))
            window = asyncio.Semaphore(self.connections * WINDOW_PER_SESSION)
            forward = asyncio.create_task(self._forward(queue, writer, window, outcomes))
            done = await self._answers(child.stdout, queue, window, forward, writer, outcomes)
        finally:
            if forward is not None:
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)
            if not done:
                writer.close()  # without "stop": the child leaves at once, mid-message if need be
            code = await child.wait()
            writer.close()
            self.lost = list(self.in_flight.values())
            self.in_flight.clear()
        if not done:
            raise CourierError(f"the sending process (service.courier) exited with code {code}")

    async def _forward(
        self,
        queue: asyncio.Queue[Mail | None],
        writer: asyncio.StreamWriter,
        window: asyncio.Semaphore,
        outcomes: Outcomes,
    ) -> None:
        """Hand the child what the queue holds, at most ``window`` emails ahead of its
        answers; then say stop (no more, or the run stops)."""
        seq = 0
        last = "stop"
        try:
            while not outcomes.stopped():
                await window.acquire()
                mail = await queue.get()
                if mail is None:
                    last = "end"
                    break
                outcomes.took()
                if outcomes.stopped():
                    queue.put_nowait(mail)  # not tried
                    break
                seq += 1
                self.in_flight[seq] = mail
                header = {"seq": seq, "to": mail.to, "message_id": mail.message_id}
                writer.write(frame({**header, "eight_bit": mail.eight_bit}, mail.data))
                await writer.drain()
            await self._say(writer, last)
        except ConnectionError:
            pass  # the child is gone: _answers sees it too

    @staticmethod
    async def _say(writer: asyncio.StreamWriter, what: str) -> None:
        writer.write(frame({what: True}))
        await writer.drain()

    async def _answers(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[Mail | None],
        window: asyncio.Semaphore,
        forward: asyncio.Task[None],
        writer: asyncio.StreamWriter,
        outcomes: Outcomes,
    ) -> bool:
        """Take the child's answers until it is done (True) or gone without a word (False)."""
        while True:
            try:
                header, _ = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return False
            if header.get("done"):
                return True
            if header.get("gone"):  # no session left: hand it nothing more
                if not forward.done():
                    forward.cancel()
                    await asyncio.gather(forward, return_exceptions=True)
                    await self._say(writer, "stop")
                continue
            mail = self.in_flight.pop(header["seq"])
            window.release()
            if header.get("sent"):
                outcomes.sent(mail)
            elif "error" in header:
                error = SendError(
                    header["error"],
                    temporary=header["temporary"],
                    network=header["network"],
                    config=header.get("config", False),
                )
                await outcomes.failed(mail, error)
            else:  # untried
                queue.put_nowait(mail)


# ---------------------------------------------------------------- the child's side


@dataclass(frozen=True, slots=True)
class _Email:
    seq: int
    mail: Mail

    @staticmethod
    def mail_of(email: _Email) -> Mail:
        return email.mail


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer

    def answer(header: dict[str, Any]) -> None:
        try:
            out.write(frame(header))
            out.flush()
        except BrokenPipeError:  # the parent died
            os._exit(1)

    try:
        config, _ = await read_frame(reader)
    except asyncio.IncompleteReadError:
        return
    from .smtp import SmtpTransport  # aiosmtplib: only the sending process needs it

    smtp = Smtp.model_validate(config["smtp"])
    transport = SmtpTransport(smtp, sender=config["sender"])
    bucket = TokenBucket(smtp.rate)
    queue: asyncio.Queue[_Email | None] = asyncio.Queue()
    stopping = ending = False  # "stop": start no other send; "end": no more will come

    async def failed(email: _Email, exc: SendError) -> None:
        answer(
            {
                "seq": email.seq,
                "error": str(exc),
                "temporary": exc.temporary,
                "network": exc.network,
                "config": exc.config,
            }
        )

    senders = [
        asyncio.create_task(
            send_from_queue(
                queue,
                transport,
                mail=_Email.mail_of,
                bucket=bucket,
                stopped=lambda: stopping,
                took=lambda: None,
                sent=lambda email: answer({"seq": email.seq, "sent": True}),
                failed=failed,
            )
        )
        for _ in range(smtp.concurrency)
    ]
    every = asyncio.gather(*senders, return_exceptions=True)

    def ended(_: Any) -> None:
        for result in every.result():
            if isinstance(result, BaseException):
                log.error("a sending session failed", exc_info=result)
        if not stopping and not ending:
            answer({"gone": True})

    every.add_done_callback(ended)
    while True:
        try:
            header, body = await read_frame(reader)
        except asyncio.IncompleteReadError:
            os._exit(1)  # the parent died: leave now, mid-message if need be
        if header.get("end"):
            ending = True
            break
        if header.get("stop"):
            stopping = True
            break
        if every.done():  # no session left: hand it straight back
            answer({"seq": header["seq"], "untried": True})
            continue
        mail = Mail(header["to"], header["message_id"], body, header["eight_bit"])
        queue.put_nowait(_Email(header["seq"], mail))

    async def watch() -> None:  # the parent says nothing more: the end of the pipe means it died
        await reader.read()
        os._exit(1)

    watcher = asyncio.create_task(watch())
    for _ in senders:
        queue.put_nowait(None)  # each session ends when it takes one (after the rest, on "end")
    await every
    while not queue.empty():
        email = queue.get_nowait()
        if email is not None:
            answer({"seq": email.seq, "untried": True})
    answer({"done": True})
    watcher.cancel()


def main() -> None:
    # Left to their default, Ctrl-C and SIGTERM would kill the sessions before the answers
    # are in: the parent says stop, or dies and closes the pipe.
    children.leave_signals_to_parent()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
