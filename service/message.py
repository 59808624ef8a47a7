"""The digest email as a message: MIME structure, headers, Message-ID.

Takes what the templates made (subject, text and HTML parts) and writes
RFC 5322 bytes a transport can send: :func:`build`. :class:`Mail` is the
finished email, from here to the server: its bytes, its envelope recipient
and the deliveries it carries. The clock and the identity of each message
come from the caller, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, message_from_string, policy
from email.charset import Charset
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import quote

UTF8 = policy.default.clone(utf8=True)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """Header-safe: CR, LF, other control characters (which no reader shows and some
    parsers choke on) and runs of white space become one space."""
    return " ".join(_CONTROL.sub(" ", text).split()) if not text.isprintable() else " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Mail:
    """A finished digest email, from rendering to the server: its bytes, who it goes to,
    and (for the outbox) the deliveries it carries."""

    to: str  # the envelope recipient
    message_id: str
    data: bytes  # RFC 5322, lines ending in "\n" (the SMTP client sends CRLF)
    eight_bit: bool = False  # a body part is raw UTF-8 (sent with BODY=8BITMIME, RFC 6152)
    subscriber_id: int = 0
    delivery_ids: tuple[int, ...] = ()  # every outbox row the email carries
    attempts: int = 0  # made so far for those rows (the most of any)

    @property
    def papers(self) -> int:
        return len(self.delivery_ids)

    @property
    def smtputf8(self) -> bool:
        """Whether the message needs an SMTPUTF8 server (an address or a header outside ASCII)."""
        return not (self.to.isascii() and self.data[: self.data.find(b"\n\n")].isascii())

    @classmethod
    def of(cls, msg: EmailMessage) -> Mail:
        """A message built with the ``email`` package, sent to its ``To`` address."""
        return cls(msg["To"].addresses[0].addr_spec, str(msg["Message-ID"]), msg.as_bytes())

    def parse(self) -> EmailMessage:
        """The message read back by the ``email`` parser (as UTF-8 text when it is an
        SMTPUTF8 message, RFC 6532, so that raw UTF-8 headers read as characters)."""
        if not self.smtputf8:
            parsed = message_from_bytes(self.data, policy=policy.default)
        else:
            parsed = message_from_string(self.data.decode("utf-8"), policy=UTF8)
            for part in parsed.walk():  # an 8-bit body read as text: give get_content its bytes
                payload = part.get_payload()
                if isinstance(payload, str) and not payload.isascii():
                    part.set_payload(payload.encode().decode("ascii", "surrogateescape"))
        assert isinstance(parsed, EmailMessage)
        return parsed

    def seven_bit(self) -> bytes:
        """The message for a server without 8BITMIME: its 8-bit parts in quoted-printable."""
        if not self.eight_bit:
            return self.data
        msg = self.parse()
        boundary = msg.get_boundary()
        assert boundary is not None  # only Renderer.message makes 8-bit mail: multipart/alternative
        parts = [(part.get_content_subtype(), part.get_content()) for part in msg.iter_parts()]
        body, _ = alternative_body(parts, boundary=boundary, eight_bit=False)
        return self.data[: self.data.index(b"\n\n") + 2] + body


MAX_8BIT_LINE = 998  # RFC 5321 4.5.3.1.6: octets in a line, without its CRLF


def alternative_body(
    parts: Sequence[tuple[str, str]], *, boundary: str, eight_bit: bool = True
) -> tuple[bytes, bool]:
    """The body of a ``multipart/alternative`` message of UTF-8 text ``parts``
    ((subtype, content) pairs), and whether a part went out as 8-bit.

    A part is sent as it is (``7bit`` when ASCII, else ``8bit`` if
    ``eight_bit``) when every line fits SMTP's 998 octets and it holds no NUL
    and no line that could be the boundary; otherwise it is quoted-printable
    (``binascii``, in C). Python's ``email`` and aiosmtplib choose the same
    way; a server without 8BITMIME gets :meth:`Mail.seven_bit`. Skipping
    the encoding saves about a third of rendering a digest. The boundary
    starts with ``=_``, which quoted-printable text can never contain.
    """
    out, any_8bit = [], False
    marker = f"--{boundary}".encode("ascii")
    for subtype, content in parts:
        raw = content.encode()
        ascii_ = raw.isascii()
        as_is = (
            (ascii_ or eight_bit)
            and max(map(len, raw.split(b"\n"))) <= MAX_8BIT_LINE
            and b"\0" not in raw
            and marker not in raw
        )
        cte = ("7bit" if ascii_ else "8bit") if as_is else "quoted-printable"
        any_8bit |= as_is and not ascii_
        out.append(
            f"--{boundary}\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\n'
            f"Content-Transfer-Encoding: {cte}\n\n".encode("ascii")
        )
        out.append(raw if as_is else binascii.b2a_qp(raw, istext=True))
        out.append(b"\n")
    out.append(f"--{boundary}--\n".encode("ascii"))
    return b"".join(out), any_8bit


def build(
    *,
    sender: str,
    list_id: str,
    to_email: str,
    to_name: str | None,
    subject: str,
    date: datetime,
    message_id: str,
    unsubscribe: Sequence[str],
    text: str,
    html: str,
    sign: Callable[[bytes], bytes] | None = None,
) -> Mail:
    """The message: shared headers, Subject, To, Message-ID, List-Unsubscribe (and
    RFC 8058's List-Unsubscribe-Post when a URL is https), then the text and HTML parts;
    with ``sign`` (:class:`service.signing.Signer`), 7-bit and signed."""
    # SMTPUTF8 only for an address outside ASCII: a name outside ASCII goes as RFC 2047 words
    utf8 = not (to_email.isascii() and sender_address(sender).isascii())
    boundary = "=_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
    head = [
        _shared_headers(one_line(sender), format_datetime(date), list_id, utf8),
        header("Subject", one_line(subject)),
        to_header(one_line(to_name or ""), to_email, utf8=utf8),
        header("Message-ID", message_id),
    ]
    if unsubscribe:
        head.append(list_unsubscribe(unsubscribe))
        if any(url.startswith("https://") for url in unsubscribe):
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n")  # RFC 8058
    head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'.encode())
    body, eight_bit = alternative_body(
        [("plain", text), ("html", html)], boundary=boundary, eight_bit=not sign
    )
    head.append(body)
    data = b"".join(head)
    return Mail(to_email, message_id, sign(data) if sign else data, eight_bit)


# Headers are written here rather than by the email package, which parses
# every value into a token tree and folds it again (that cost a digest more
# than rendering its templates) and loses the space between two encoded words
# when it folds a long header outside ASCII. ASCII text is folded at spaces;
# other text becomes RFC 2047 encoded words (``email.header.Header``), which
# keep every character, spaces included. Values reach here through
# ``one_line``, so none can carry a line break, and so no header of its own.

MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_PLAIN = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")  # printable ASCII words, single spaces
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ATOMS = re.compile(f"[{_ATEXT}]+(?: [{_ATEXT}]+)*")  # a phrase that needs no quotes
_LOCAL = re.compile(f"[{_ATEXT}\u0080-\U0010ffff]+(?:\\.[{_ATEXT}\u0080-\U0010ffff]+)*")  # RFC 6532 dot-atom
_DOMAIN = re.compile(r"[A-Za-z0-9\u0080-\U0010ffff-]+(?:\.[A-Za-z0-9\u0080-\U0010ffff-]+)*")


_UTF8 = Charset("utf-8")


def _fold(name: str, words: Sequence[str], sep: str) -> str:
    """``name: w1<sep>w2...``, a line break before a word that would pass MAX_LINE
    (the break replaces the space that ends ``sep``; a word longer than a line stays whole)."""
    lines, line = [], f"{name}:"
    for i, word in enumerate(words):
        piece = (sep if i else " ") + word
        if i and len(line) + len(piece) > MAX_LINE:
            lines.append(line + sep.rstrip(" "))
            line = " " + word
        else:
            line += piece
    return "\n".join([*lines, line]) + "\n"


def _encoded(name: str, value: str) -> str:
    """``value`` as RFC 2047 encoded words, folded for a header called ``name``."""
    return Header(value, "utf-8", header_name=name).encode(linesep="\n")


def header(name: str, value: str) -> bytes:
    """One unstructured header (Subject, Message-ID): ASCII words folded at spaces,
    anything else (or a run that could be read as an encoded word) encoded."""
    if len(value) < 900 and "=?" not in value and _PLAIN.fullmatch(value):
        return _fold(name, value.split(" "), " ").encode("ascii")
    return f"{name}: {_encoded(name, value)}\n".encode("ascii")


def to_header(name: str, email: str, *, utf8: bool = False) -> bytes:
    """``To: Name <local@domain>``: the name as atoms, a quoted string or encoded words;
    an address outside ASCII as UTF-8 (RFC 6532: the message then needs SMTPUTF8)."""
    local, _, domain = email.rpartition("@")
    if not (_LOCAL.fullmatch(local) and _DOMAIN.fullmatch(domain)):  # a quoted local part, say
        return _by_email_package("To", Address(name, username=local, domain=domain), utf8=utf8)
    if not name:
        return f"To: {email}\n".encode()
    if "=?" not in name and _ATOMS.fullmatch(name):
        phrase = name
    elif name.isascii():
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:  # one encoded word, as email.utils.formataddr writes it: split in two, many
        phrase = _UTF8.header_encode(name)  # readers (Python's own) put a space between them
    line = f"To: {phrase} <{email}>"
    if len(line.rpartition("\n")[2]) > MAX_LINE:
        line = f"To: {phrase}\n <{email}>"
    return f"{line}\n".encode()


def _by_email_package(name: str, value: Any, *, utf8: bool) -> bytes:
    msg = EmailMessage(policy=UTF8 if utf8 else policy.default)
    msg[name] = value
    return msg.as_bytes()[:-1]  # without the blank line that ends the header block


_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"  # what may stay as it is in a URL between < and >


def list_unsubscribe(urls: Sequence[str]) -> bytes:
    """``List-Unsubscribe: <url>, <url>`` (RFC 2369): folded only between URLs, never
    inside one, and never encoded (a receiving server reads the URLs as they are);
    a character that cannot stand in a URL is percent-encoded."""
    return _fold("List-Unsubscribe", [f"<{quote(url, safe=_URL_SAFE)}>" for url in urls], ", ").encode(
        "ascii"
    )


@functools.lru_cache(maxsize=64)
def _shared_headers(sender: str, date: str, list_id: str, utf8: bool) -> bytes:
    """The headers every email of a delivery run shares, folded once (the email package
    spends more time on headers than on anything else in a digest)."""
    msg = EmailMessage(policy=UTF8 if utf8 else policy.default)
    msg["From"] = sender
    msg["Date"] = date
    msg["List-Id"] = list_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "list"
    msg["MIME-Version"] = "1.0"
    return msg.as_bytes()[:-1]  # without the blank line that ends the header block


@functools.lru_cache(maxsize=16)  # one sender for every email of a run
def sender_address(sender: str) -> str:
    """The address in ``Name <address>``."""
    return parseaddr(sender)[1]


def sender_domain(sender: str) -> str:
    return sender_address(sender).rpartition("@")[2] or "localhost"


def list_id(sender: str) -> str:
    """``List-Id: paperboy <paperboy.example.org>`` (RFC 2919), from the sender's domain."""
    return f"paperboy <paperboy.{sender_domain(sender)}>"


def message_id(*, sender: str, token: str, delivery_ids: Sequence[int]) -> str:
    """The same digest (same subscriber, same deliveries) always has the same Message-ID.

    A retried send therefore carries the id of the first try, and a receiving
    server or client that saw it already can drop the copy.
    """
    digest = hashlib.sha256(f"{token}:{','.join(map(str, sorted(delivery_ids)))}".encode()).hexdigest()
    return f"<{digest[:32]}@{sender_domain(sender)}>"
