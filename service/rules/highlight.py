"""Where terms occur in a text: the spans the email and the page mark up.

The same folding and the same needles as the index (:mod:`.terms`), so a
term is highlighted exactly where it matched.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ahocorasick

from ..text import Token, tokens
from .terms import Pattern, RuleError, parse_term


@dataclass(slots=True)
class FoldedText:
    """A text as the index reads it: its words joined by spaces, and their places."""

    text: str
    haystack: str
    tokens: list[Token]
    starts: list[int] = field(default_factory=list)  # where each word starts in haystack

    @classmethod
    def of(cls, text: str) -> FoldedText:
        toks = tokens(text)
        starts = []
        pos = 1
        for tok in toks:
            starts.append(pos)
            pos += len(tok.folded) + 1
        return cls(text, " " + " ".join(t.folded for t in toks) + " ", toks, starts)

    def span(self, end_index: int, needle: str) -> tuple[int, int]:
        """The span in the original text of a hit ending at ``end_index`` (inclusive)."""
        first = bisect.bisect_left(self.starts, end_index - len(needle) + 2)
        last = bisect.bisect_right(self.starts, end_index) - 1
        return self.tokens[first].start, self.tokens[last].end


@functools.lru_cache(maxsize=8192)  # one paper's text goes to many readers
def folded(text: str) -> FoldedText:
    """``text`` folded as the index reads it (made once per text)."""
    return FoldedText.of(text)


@functools.lru_cache(maxsize=4096)  # readers share terms, and each reader has many papers
def _needles(terms: tuple[str, ...]) -> tuple[Any, tuple[Pattern, ...]]:
    """One automaton of the terms' needles (None: no needle), and their regexes."""
    automaton = ahocorasick.Automaton()
    patterns = []
    for raw in terms:
        try:
            term = parse_term(raw)
        except RuleError:
            continue
        if isinstance(term, Pattern):
            patterns.append(term)
            continue
        for needle in term.needles():
            automaton.add_word(needle, needle)
    if not len(automaton):
        return None, tuple(patterns)
    automaton.make_automaton()
    return automaton, tuple(patterns)


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Where ``terms`` (as :func:`parse_term` reads them) occur in ``text``: sorted, merged spans."""
    automaton, patterns = _needles(tuple(terms))
    spans: list[tuple[int, int]] = []
    for term in patterns:
        spans.extend(m.span() for m in term.regex.finditer(text) if m.end() > m.start())
    if automaton is not None:
        found = folded(text)
        spans.extend(found.span(end, needle) for end, needle in automaton.iter(found.haystack))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
