"""Turn matched papers into what people read: the digest email and its pieces.

Templates live in ``templates/`` (``subject.txt.j2``, ``email.txt.j2``,
``email.html.j2``); ``templates_dir`` in the configuration points at an
operator's own copies. HTML is autoescaped and every template runs with
``StrictUndefined``, so a missing variable fails loudly instead of sending a
blank. The clock and the identity of each message come from the caller, so
the same inputs always render the same bytes.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import quote, quote_plus

import jinja2
from jinja2.filters import do_wordwrap
from markupsafe import Markup, escape

from .rules import highlight_spans

_URL = re.compile(r"https?://[^\s<>\"']+")
_URL_TRAILING = ".,;:!?)]}'\""
UTF8 = policy.default.clone(utf8=True)


def templates_path(override: Path | None = None) -> Path:
    """The templates folder: the override, the checkout's, or the installed copy."""
    if override is not None:
        return override
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if (candidate / "email.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"no templates found beside {here}; reinstall paperboy")


def one_line(text: str) -> str:
    """Header-safe: CR, LF and runs of white space become one space."""
    return " ".join(text.split())


def paper_link(template: str, *, title: str, key: str) -> str:
    return template.format(title=quote_plus(title), key=quote(key, safe=""))


def markup(text: str, terms: Sequence[str]) -> Markup:
    """``text`` as HTML: matched terms in ``<mark>``, URLs linked, the rest escaped."""
    pieces: list[tuple[int, int, str]] = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_URL_TRAILING)
        pieces.append((m.start(), m.start() + len(url), "a"))
    for start, end in highlight_spans(text, terms):
        if not any(s < end and start < e for s, e, _ in pieces):  # a link wins over a mark
            pieces.append((start, end, "mark"))
    out, pos = [], 0
    for start, end, kind in sorted(pieces):
        out.append(escape(text[pos:start]))
        inner = escape(text[start:end])
        if kind == "a":
            out.append(Markup('<a href="{}">{}</a>').format(text[start:end], inner))
        else:
            out.append(Markup("<mark>{}</mark>").format(inner))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)


@functools.lru_cache(maxsize=4096)
def _markup_cached(text: str, terms: tuple[str, ...]) -> Markup:
    """One paper goes to many subscribers, mostly for the same terms: mark it up once."""
    return markup(text, terms)


@dataclass(frozen=True, slots=True)
class PaperView:
    title: str
    abstract: str
    link: str
    terms: tuple[str, ...]
    score: int
    title_html: Markup
    abstract_html: Markup

    via: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        title: str,
        abstract: str,
        link: str,
        terms: Sequence[str],
        score: int,
        via: Sequence[str] = (),
    ) -> PaperView:
        title = one_line(title)
        terms = tuple(terms)
        return cls(
            title,
            abstract,
            link,
            terms,
            score,
            _markup_cached(title, terms),
            _markup_cached(abstract, terms),
            tuple(via),
        )

    @property
    def sources(self) -> list[str]:
        """What brought the paper, for people: "your keywords", "your query", "topic llm-safety"."""
        return [
            f"topic {v.removeprefix('topic:')}" if v.startswith("topic:") else f"your {v}" for v in self.via
        ]


@dataclass(frozen=True, slots=True)
class Digest:
    """One subscriber's next email, before it becomes a message."""

    to_email: str
    to_name: str | None
    papers: list[PaperView]  # best first, at most max_papers
    more: int  # matched papers left out of the email (they are in the feed)
    feed_url: str
    unsubscribe: list[str]  # List-Unsubscribe URLs, the one to show people first
    message_id: str
    date: datetime


@dataclass(frozen=True, slots=True)
class Mail:
    """A finished message: its bytes, ready for a transport, and who it goes to."""

    to: str  # the envelope recipient
    message_id: str
    data: bytes  # RFC 5322, lines ending in "\n" (the SMTP client sends CRLF)

    @property
    def smtputf8(self) -> bool:
        """Whether the message needs an SMTPUTF8 server (an address outside ASCII)."""
        return not (self.to.isascii() and self.data.isascii())

    @classmethod
    def of(cls, msg: EmailMessage) -> Mail:
        """A message built with the ``email`` package, sent to its ``To`` address."""
        return cls(msg["To"].addresses[0].addr_spec, str(msg["Message-ID"]), msg.as_bytes())

    def parse(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def alternative_body(text: str, html: str, *, boundary: str) -> str:
    """The body of a ``multipart/alternative`` message: the text part, then the HTML part,
    both UTF-8 in quoted-printable.

    Built here rather than by ``email``'s generator, which spends several
    milliseconds a digest on encoding and line handling in Python (the
    delivery benchmark's largest cost); ``binascii`` encodes in C. The
    boundary starts with ``=_``, which quoted-printable text can never
    contain, so it cannot collide with a part.
    """
    parts = []
    for subtype, content in (("plain", text), ("html", html)):
        encoded = binascii.b2a_qp(content.encode(), istext=True).decode("ascii")
        parts.append(
            f"--{boundary}\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\n'
            "Content-Transfer-Encoding: quoted-printable\n\n"
            f"{encoded}\n"
        )
    return "".join(parts) + f"--{boundary}--\n"


class Renderer:
    def __init__(self, templates: Path) -> None:
        loader = jinja2.FileSystemLoader(str(templates))
        self.templates = templates
        self.html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        self.text = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        # A paper's abstract goes to many readers: wrap it once (the same filter, remembered).
        wordwrap = functools.partial(do_wordwrap, self.text)
        self.text.filters["wordwrap"] = functools.lru_cache(maxsize=4096)(wordwrap)

    def check(self) -> None:
        """Load every template, so a broken one stops start-up, not a delivery."""
        for name in ("subject.txt.j2", "email.txt.j2"):
            self.text.get_template(name)
        self.html.get_template("email.html.j2")

    def message(self, digest: Digest, *, sender: str, list_id: str) -> Mail:
        context = {"digest": digest, "papers": digest.papers, "more": digest.more}
        subject = one_line(self.text.get_template("subject.txt.j2").render(context))
        text = self.text.get_template("email.txt.j2").render(context)
        html = self.html.get_template("email.html.j2").render(context)
        # Headers go through the email package, which folds and encodes them and
        # refuses a value that would smuggle in a header of its own.
        # An address outside ASCII can only travel as UTF-8 (RFC 6531, SMTPUTF8).
        utf8 = not (digest.to_email.isascii() and sender.isascii())
        msg = EmailMessage(policy=UTF8 if utf8 else policy.default)
        msg["Subject"] = subject
        local, _, domain = digest.to_email.rpartition("@")  # (addr_spec= refuses a local part outside ASCII)
        msg["To"] = Address(one_line(digest.to_name or ""), username=local, domain=domain)
        msg["Message-ID"] = digest.message_id
        if digest.unsubscribe:
            msg["List-Unsubscribe"] = ", ".join(f"<{url}>" for url in digest.unsubscribe)
            if any(url.startswith("https://") for url in digest.unsubscribe):
                msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
        boundary = "=_" + hashlib.sha256(digest.message_id.encode()).hexdigest()[:24]
        msg["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        msg.set_payload(alternative_body(text, html, boundary=boundary))  # already encoded: written as is
        head = _shared_headers(one_line(sender), format_datetime(digest.date), list_id, utf8)
        return Mail(digest.to_email, digest.message_id, head + msg.as_bytes())


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


def sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


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
