"""Subscribers' rules, compiled into one index that reads each paper once.

Semantics (spec section 5):

- A keyword matches whole words, case-insensitively, in the title or the
  abstract. A keyword of several words is a phrase: the words in sequence.
  ``-``, ``_``, spaces and punctuation between words are all the same.
  Diacritics and LaTeX accent escapes fold (``TÜLU`` = ``T\\"ULU`` = ``tulu``);
  see :mod:`service.text` for what a word is.
- A keyword also matches its plural (``LLM`` matches ``LLMs``); in a phrase
  only the last word may be plural (``reward model`` matches ``reward models``).
- A subscriber gets a paper when any of their ``keywords`` matches and none of
  their ``exclude`` terms does.
- Score, for ranking (transparent on purpose): each distinct keyword that
  matched counts 2 when it occurs in the title, 1 when only in the abstract.

How: every term of every subscriber is compiled into one Aho-Corasick
automaton over folded text. A text is folded into its words joined by single
spaces, with a space at each end; a term's needle is its folded words with a
space at each end, so any hit is a whole-word hit. The automaton reports
overlapping hits, so ``neural network`` never hides ``network``. Matching a
paper is one scan of its title and one of its abstract, whatever the number
of subscribers; only subscribers whose terms occurred are evaluated.

Pure: no database, no settings, no clock.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import ahocorasick

from .text import Token, plurals, tokens

TITLE_WEIGHT = 2
ABSTRACT_WEIGHT = 1


class RuleError(ValueError):
    """A rule that cannot be compiled. ``str()`` says which and why."""


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase, folded. ``text`` is how the subscriber wrote it."""

    text: str
    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Term:
        words = tuple(t.folded for t in tokens(text))
        if not words:
            raise RuleError(f"{text!r} holds no word to match")
        return cls(text, words)

    def needles(self) -> list[str]:
        """The space-delimited folded strings this term matches."""
        *head, last = self.words
        return [" " + " ".join([*head, form]) + " " for form in (last, *plurals(last))]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One subscriber's rules."""

    owner: str
    keywords: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()

    @classmethod
    def build(cls, owner: str, keywords: Iterable[str], exclude: Iterable[str] = ()) -> RuleSet:
        return cls(owner, tuple(map(Term.parse, keywords)), tuple(map(Term.parse, exclude)))


@dataclass(frozen=True, slots=True)
class Match:
    """Why ``owner`` gets a paper: the keywords that hit, and the ranking score."""

    owner: str
    terms: tuple[str, ...]
    score: int


@dataclass(slots=True)
class Folded:
    """A text as the index reads it: its words joined by spaces, and their places."""

    text: str
    haystack: str
    tokens: list[Token]
    starts: list[int] = field(default_factory=list)  # where each word starts in haystack

    @classmethod
    def of(cls, text: str) -> Folded:
        toks = tokens(text)
        starts = []
        pos = 1
        for tok in toks:
            starts.append(pos)
            pos += len(tok.folded) + 1
        return cls(text, " " + " ".join(t.folded for t in toks) + " ", toks, starts)

    def span(self, end_index: int, needle: str) -> tuple[int, int]:
        """The span in the original text of a hit ending at ``end_index`` (the closing space)."""
        first = bisect.bisect_left(self.starts, end_index - len(needle) + 2)
        last = bisect.bisect_right(self.starts, end_index - 1) - 1
        return self.tokens[first].start, self.tokens[last].end


class Automaton:
    """An Aho-Corasick automaton from needles to the terms they stand for."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self._auto = ahocorasick.Automaton()
        by_needle: dict[str, list[Term]] = defaultdict(list)
        for term in terms:
            for needle in term.needles():
                if term not in by_needle[needle]:
                    by_needle[needle].append(term)
        for needle, owners in by_needle.items():
            self._auto.add_word(needle, (needle, tuple(owners)))
        self.empty = not by_needle
        if not self.empty:
            self._auto.make_automaton()

    def hits(self, folded: Folded) -> Iterable[tuple[int, str, tuple[Term, ...]]]:
        if self.empty:
            return ()
        return ((end, needle, owners) for end, (needle, owners) in self._auto.iter(folded.haystack))

    def terms_in(self, folded: Folded) -> set[Term]:
        found: set[Term] = set()
        for _, _, owners in self.hits(folded):
            found.update(owners)
        return found


class Index:
    """All subscribers' rules in one automaton."""

    def __init__(self, rule_sets: Sequence[RuleSet]) -> None:
        self.rule_sets = {r.owner: r for r in rule_sets}
        users: dict[Term, set[str]] = defaultdict(set)
        for rules in rule_sets:
            for term in rules.keywords:
                users[term].add(rules.owner)
        self._users = dict(users)  # which owners a keyword can bring a paper to
        self._automaton = Automaton(t for r in rule_sets for t in (*r.keywords, *r.exclude))

    def match(self, title: str, abstract: str) -> list[Match]:
        """Every owner that gets this paper, with why; sorted by owner."""
        in_title = self._automaton.terms_in(Folded.of(title))
        in_abstract = self._automaton.terms_in(Folded.of(abstract))
        found = in_title | in_abstract
        candidates: set[str] = set()
        for term in found:
            candidates |= self._users.get(term, set())
        out = []
        for owner in sorted(candidates):
            rules = self.rule_sets[owner]
            if any(term in found for term in rules.exclude):
                continue
            hit = [t for t in rules.keywords if t in found]
            score = sum(TITLE_WEIGHT if t in in_title else ABSTRACT_WEIGHT for t in hit)
            out.append(Match(owner, tuple(t.text for t in hit), score))
        return out


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Where ``terms`` occur in ``text``: sorted, non-overlapping (start, end) spans."""
    parsed = []
    for term in terms:
        try:
            parsed.append(Term.parse(term))
        except RuleError:
            continue
    folded = Folded.of(text)
    spans = sorted(folded.span(end, needle) for end, needle, _ in Automaton(parsed).hits(folded))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
