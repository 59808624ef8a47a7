"""Each paper as people read it, in the email and on the page: its title and abstract
with the rule terms marked and URLs linked (LaTeX leftovers tidied, :mod:`service.latex`),
its abstract shortened, its link, and why it came, in words.

What is the same for every reader of a paper is made once (:func:`markup_once`,
:func:`paper_link`): one paper goes to many readers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

from markupsafe import Markup, escape

from .latex import tidy
from .message import one_line
from .rules import highlight_spans
from .rules.words import either, readable
from .taste import SUGGESTED

_URL = re.compile(r"https?://[^\s<>\"'{}]+")  # a brace ends a URL: LaTeX glued text to it
_URL_TRAILING = ".,;:!?)]}'\""
SHORT = 300  # characters of a shortened abstract, at most (then a word boundary and "…")


@functools.lru_cache(maxsize=8192)  # one paper goes to many readers
def paper_link(template: str, *, title: str, key: str) -> str:
    """The link of a paper (``email.paper_link``): its title (LaTeX tidied) or key, quoted."""
    return template.format(title=quote_plus(tidy(title)), key=quote(key, safe=""))


def markup(text: str, terms: Sequence[str]) -> Markup:
    """``text`` as HTML: matched terms in ``<mark>``, URLs linked, the rest escaped."""
    return _marked(text, tuple(highlight_spans(text, terms)))


def _marked(text: str, spans: Sequence[tuple[int, int]]) -> Markup:
    """``text`` as HTML, ``spans`` in ``<mark>``, URLs linked, the rest escaped."""
    pieces: list[tuple[int, int, str]] = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_URL_TRAILING)
        pieces.append((m.start(), m.start() + len(url), "a"))
    for start, end in spans:
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


def markup_once(text: str, terms: tuple[str, ...], *, wrap: bool = False) -> Markup:
    """:func:`markup`, made once per text and what the terms find in it (``wrap``: in short
    lines, :func:`short_lines`). One paper goes to many readers, whose terms differ more
    often than what they find in it: in a title, mostly nothing."""
    return _marked_once(text, _spans(text, terms), wrap)


@functools.lru_cache(maxsize=1 << 13)  # the mark-up below is kept by spans: this only saves a search
def _spans(text: str, terms: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(highlight_spans(text, terms))


@functools.lru_cache(maxsize=1 << 14)
def _marked_once(text: str, spans: tuple[tuple[int, int], ...], wrap: bool) -> Markup:
    html = _marked(text, spans)
    return Markup(short_lines(html)) if wrap else html


_TAG = re.compile(r"(<[^>]*>)")


def _breakable_words(html: str) -> list[str]:
    """``html`` split at each space outside a tag (a tag stays with the words around it)."""
    words = [""]
    for i, part in enumerate(_TAG.split(html)):
        if i % 2:  # a tag
            words[-1] += part
        else:
            first, *rest = part.split(" ")
            words[-1] += first
            words.extend(rest)
    return words


def short_lines(html: str, width: int = 76) -> str:
    """``html`` with a line break for a space where a line would pass ``width``.

    HTML reads a line break between words as a space (a space inside a tag
    stays). An abstract in one line is far longer than SMTP's 998 octets; in
    short lines the HTML part travels as it is, not quoted-printable.
    """
    out, length = [], -1
    for word in _breakable_words(html):
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


def shorten(text: str, limit: int = SHORT) -> str | None:
    """``text`` cut at a word boundary before ``limit`` characters, with "…"; None when it is
    short enough already."""
    if len(text) <= limit:
        return None
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.(")
    return cut + "…"


def why(title: str, terms: tuple[str, ...], via: tuple[str, ...] = ()) -> Markup:
    """A plain sentence of why a paper came: "Title mentions *reward model*; abstract mentions
    *RLHF*; via topic llm-safety." (Terms in the title first; a ``/regex/`` is not named.)"""
    if SUGGESTED in via:
        return Markup("Suggested: your rules did not select it; your answers rank it with your best.")
    in_title: list[str] = []
    in_abstract: list[str] = []
    for term in terms:
        word = readable(term)
        if word is None or word in in_title or word in in_abstract:
            continue
        (in_title if _in_title(title, term) else in_abstract).append(word)
    return _why(tuple(in_title), tuple(in_abstract), via)


@functools.lru_cache(maxsize=1 << 14)  # one paper goes to many readers; a term, to many papers
def _in_title(title: str, term: str) -> bool:
    return bool(highlight_spans(title, [term]))


@functools.lru_cache(maxsize=8192)  # readers share words far more often than whole sets of terms
def _why(in_title: tuple[str, ...], in_abstract: tuple[str, ...], via: tuple[str, ...]) -> Markup:
    parts = []
    if in_title:
        parts.append(Markup("title mentions {}").format(_emphasised(in_title)))
    if in_abstract:
        parts.append(Markup("abstract mentions {}").format(_emphasised(in_abstract)))
    topics = [v.removeprefix("topic:") for v in via if v.startswith("topic:")]
    sources = []  # your keywords go without saying, unless something else brought it too
    if "keywords" in via and (topics or "query" in via):
        sources.append("your keywords")
    if "query" in via:
        sources.append("your query")
    if topics:
        sources.append(f"topic{'s' if len(topics) > 1 else ''} {either(topics, 'and')}")
    if sources:
        parts.append(Markup("via {}").format(either(sources, "and")))
    if not parts:
        return Markup("It matched your rules.")
    sentence = Markup("; ").join(parts)
    return Markup(sentence[:1].upper()) + Markup(sentence[1:]) + Markup(".")


def _emphasised(words: Sequence[str]) -> Markup:
    return Markup(either([str(Markup("<em>{}</em>").format(w)) for w in words], "and"))


@dataclass(frozen=True, slots=True)
class PaperView:
    """A paper as a reader sees it. Its title and abstract as HTML (:attr:`title_html`,
    :attr:`abstract_html`, :attr:`short_html`) are made when a template asks for them, once
    per paper and terms: an email shows most abstracts shortened, and a reader's terms are
    often theirs alone."""

    title: str  # tidied (LaTeX leftovers as characters), one line
    abstract: str  # tidied
    link: str
    terms: tuple[str, ...]
    score: int
    via: tuple[str, ...] = ()
    short: str | None = None  # the abstract shortened (None: it is short already)
    why: Markup = field(default_factory=Markup)  # why it came, in a sentence
    anchor: str = ""  # its place on the reader's page ("p123")
    more_url: str = ""  # "more like this" and "less like this" (service.ratings); "": none
    less_url: str = ""
    rated: str = ""  # the reader's answer so far: "more", "less" or ""
    taste: str = ""  # why the reader's learned taste ranks it so (service.taste.why); "": no taste

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
        anchor: str = "",
        more_url: str = "",
        less_url: str = "",
        rated: str = "",
        taste: str = "",
    ) -> PaperView:
        title = one_line(tidy(title))
        abstract = tidy(abstract)
        terms = tuple(terms)
        return cls(
            title,
            abstract,
            link,
            terms,
            score,
            tuple(via),
            shorten(abstract),
            why(title, terms, tuple(via)),
            anchor,
            more_url,
            less_url,
            rated,
            taste,
        )

    @property
    def title_html(self) -> Markup:
        return markup_once(self.title, self.terms)

    @property
    def abstract_html(self) -> Markup:
        return markup_once(self.abstract, self.terms, wrap=True)  # an abstract is one long line

    @property
    def short_html(self) -> Markup | None:
        return None if self.short is None else markup_once(self.short, self.terms, wrap=True)

    @property
    def why_text(self) -> str:
        return _plain(self.why)

    @property
    def sources(self) -> list[str]:
        """What brought the paper, for people: "your keywords", "your query", "topic llm-safety"."""
        return list(_sources(self.via))


@functools.lru_cache(maxsize=8192)  # the sentences are shared as :func:`why`'s are
def _plain(html: Markup) -> str:
    return html.striptags()


@functools.lru_cache(maxsize=256)  # the templates ask for every paper of every email, twice
def _sources(via: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"topic {v.removeprefix('topic:')}" if v.startswith("topic:") else f"your {v}" for v in via)
