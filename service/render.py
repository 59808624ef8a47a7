"""What people read: each paper and each digest as the templates see them.

A :class:`Digest` is one subscriber's next email before it is a message:
its papers (:class:`PaperView`, terms marked up, links made), what was left
out, its links. :class:`Renderer` runs the templates over it; the message
itself (MIME, headers) is :mod:`service.message`'s.

Templates live in ``templates/`` (``subject.txt.j2``, ``email.txt.j2``,
``email.html.j2``); ``templates_dir`` in the configuration points at an
operator's own copies. HTML is autoescaped and every template runs with
``StrictUndefined``, so a missing variable fails loudly instead of sending a
blank. The clock and the identity of each message come from the caller, so
the same inputs always render the same bytes.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import jinja2
from jinja2.filters import do_wordwrap
from markupsafe import Markup, escape

from .message import Mail, build, one_line
from .rules import highlight_spans

_URL = re.compile(r"https?://[^\s<>\"']+")
_URL_TRAILING = ".,;:!?)]}'\""
TEMPLATE_RECHECK = 1.0  # seconds between looks at a template file for changes


def templates_path(override: Path | None = None) -> Path:
    """The templates folder: the override, the checkout's, or the installed copy."""
    if override is not None:
        return override
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if (candidate / "email.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"no templates found beside {here}; reinstall paperboy")


@functools.lru_cache(maxsize=8192)  # one paper goes to many readers
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
def markup_once(text: str, terms: tuple[str, ...], *, wrap: bool = False) -> Markup:
    """One paper goes to many subscribers, mostly for the same terms: mark it up once
    (``wrap``: in short lines, :func:`short_lines`)."""
    html = markup(text, terms)
    return Markup(short_lines(html)) if wrap else html


_BREAKABLE_SPACE = re.compile(" (?![^<>]*>)")  # not inside a tag: the next angle bracket is no ">"


def short_lines(html: str, width: int = 76) -> str:
    """``html`` with a line break for a space where a line would pass ``width``.

    HTML reads a line break between words as a space (a space inside a tag
    stays). An abstract in one line is far longer than SMTP's 998 octets; in
    short lines the HTML part travels as it is, not quoted-printable.
    """
    out, length = [], -1
    for word in _BREAKABLE_SPACE.split(html):
        if length >= 0 and length + 1 + len(word) > width:
            out.append("\n")
            length = 0
        elif length >= 0:
            out.append(" ")
            length += 1
        else:
            length = 0
        out.append(word)
        newline = word.rfind("\n")
        length = len(word) - newline - 1 if newline >= 0 else length + len(word)
    return "".join(out)


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
            markup_once(title, terms),
            markup_once(abstract, terms, wrap=True),  # an abstract is one long line
            tuple(via),
        )

    @property
    def sources(self) -> list[str]:
        """What brought the paper, for people: "your keywords", "your query", "topic llm-safety"."""
        return list(_sources(self.via))


@functools.lru_cache(maxsize=256)  # the templates ask for every paper of every email, twice
def _sources(via: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"topic {v.removeprefix('topic:')}" if v.startswith("topic:") else f"your {v}" for v in via)


@dataclass(frozen=True, slots=True)
class Digest:
    """One subscriber's next email, before it becomes a message."""

    to_email: str
    to_name: str | None
    papers: list[PaperView]  # best first, at most max_papers
    more: int  # matched papers left out of the email (they are on the reader's page and feed)
    feed_url: str
    unsubscribe: list[str]  # List-Unsubscribe URLs, the one to show people first
    message_id: str
    date: datetime
    page_url: str = ""  # the reader's page (every paper, their feeds and rules); "" : the feed


class Renderer:
    def __init__(self, templates: Path, *, sign: Callable[[bytes], bytes] | None = None) -> None:
        """``sign``: a DKIM signer (:class:`service.signing.Signer`) for every message."""
        loader = jinja2.FileSystemLoader(str(templates))
        self.templates = templates
        self.sign = sign
        self.html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        self.text = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        # A paper's abstract goes to many readers: wrap it once (the same filter, remembered).
        wordwrap = functools.partial(do_wordwrap, self.text)
        self.text.filters["wordwrap"] = functools.lru_cache(maxsize=4096)(wordwrap)
        self._loaded: dict[str, tuple[jinja2.Template, float]] = {}

    def _template(self, env: jinja2.Environment, name: str) -> jinja2.Template:
        """``env.get_template(name)``, asked at most once a second: Jinja2 looks at the file's
        modification time on every call, so an edited template is still picked up
        while a delivery run renders thousands of emails."""
        now = time.monotonic()
        hit = self._loaded.get(name)
        if hit is not None and now - hit[1] < TEMPLATE_RECHECK:
            return hit[0]
        template = env.get_template(name)
        self._loaded[name] = (template, now)
        return template

    def check(self) -> None:
        """Load every template, so a broken one stops start-up, not a delivery."""
        for name in ("subject.txt.j2", "email.txt.j2"):
            self.text.get_template(name)
        self.html.get_template("email.html.j2")

    def parts(self, digest: Digest) -> tuple[str, str, str]:
        """The subject, the text part and the HTML part of ``digest``'s email."""
        context = {"digest": digest, "papers": digest.papers, "more": digest.more}
        subject = self._template(self.text, "subject.txt.j2").render(context)
        text = self._template(self.text, "email.txt.j2").render(context)
        html = self._template(self.html, "email.html.j2").render(context)
        return subject, text, html

    def message(self, digest: Digest, *, sender: str, list_id: str) -> Mail:
        """``digest`` as a finished message (:func:`service.message.build`)."""
        subject, text, html = self.parts(digest)
        return build(
            sender=sender,
            list_id=list_id,
            to_email=digest.to_email,
            to_name=digest.to_name,
            subject=subject,
            date=digest.date,
            message_id=digest.message_id,
            unsubscribe=digest.unsubscribe,
            text=text,
            html=html,
            sign=self.sign,
        )
