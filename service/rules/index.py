"""Every subscriber's and topic's rules compiled into one index that reads each paper once.

Every term of every subscriber and topic is compiled into one
Aho-Corasick automaton over folded text. A text is folded into its words
joined by single spaces, with a space at each end; a term's needle is its
folded words with a space at each end (a prefix: no space after the stem), so
every hit is a whole-word hit. The automaton reports overlapping hits, so
``neural network`` never hides ``network``. Matching a paper is one scan of
its title and one of its abstract, whatever the number of rules. Only rules
that one of the found terms can make true are evaluated: a rule with no term
found is false, unless it holds a regex or is true when nothing is found
(``NOT survey``); those few are evaluated for every paper.

Score, for ranking: every distinct term that brought the paper counts
TITLE_WEIGHT when it occurs in the title, ABSTRACT_WEIGHT when only in the
abstract. Terms under a NOT never count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import ahocorasick

from ..text import haystack
from .evaluate import Hits, Reasons, holds, reasons
from .query import And, Leaf, Node, Not, Or, RuleSet
from .terms import Pattern, RuleError, Term

TITLE_WEIGHT = 2
ABSTRACT_WEIGHT = 1


class Match(NamedTuple):
    """Why ``owner`` gets a paper: the terms that hit, the score and what brought it.

    ``via`` holds ``keywords``, ``query`` and ``topic:<name>`` for each rule that matched.
    (A named tuple: the index makes one per matching subscriber and paper.)
    """

    owner: str
    terms: tuple[str, ...]
    score: int
    via: tuple[str, ...] = ("keywords",)


_VIA_KEYWORDS = ("keywords",)


@dataclass(frozen=True, slots=True)
class Result:
    """Every subscriber and every topic that gets one paper, in no particular order."""

    subscribers: list[Match]
    topics: list[Match]


@dataclass(slots=True)
class Compiled:
    """One rule set as the index holds it: its terms replaced by the index's term ids."""

    rules: RuleSet  # as parsed
    query: Node | None  # the query with every leaf compiled (given its term id)
    keywords: Reasons  # term -> as written
    positive: set[int | Pattern]  # every term that can make this rule true
    topics: tuple[int, ...]  # indexes into Index.topics
    simple: bool  # no query, no regex: matched by any keyword that occurred (or a followed topic)
    plain_keywords: bool = True  # no regex among the keywords
    exclude_ids: frozenset[int] = frozenset()  # the exclude terms that are not regexes
    exclude_patterns: tuple[Pattern, ...] = ()


# What brought a paper to one rule set: the matched terms (term -> as written) and the rules.
_Why = tuple[Reasons, tuple[str, ...]]


class Index:
    """All subscribers' and topics' rules in one automaton."""

    def __init__(self, subscribers: Sequence[RuleSet], topics: Sequence[RuleSet] = ()) -> None:
        self._term_ids: dict[Term, int] = {}
        self.topic_names = [t.owner for t in topics]
        topic_index = {name: i for i, name in enumerate(self.topic_names)}
        for rules in subscribers:
            for name in rules.topics:
                if name not in topic_index:
                    raise RuleError(f"{rules.owner}: unknown topic {name!r}")
        self.topics = [self._compile(t, topic_index) for t in topics]
        self.subscribers = [self._compile(s, topic_index) for s in subscribers]

        # term id -> the rules it can make true; and the rules evaluated for every paper.
        # Keyword-only subscribers (most of them) take a faster path: term -> subscribers
        # whose keywords hold it, and term -> subscribers whose exclude holds it.
        simple = [i for i, c in enumerate(self.subscribers) if c.simple]
        general = [i for i, c in enumerate(self.subscribers) if not c.simple]
        self._topic_users = self._users(self.topics, range(len(self.topics)))
        self._users_of = self._users(self.subscribers, general)
        self._simple_users = self._users(self.subscribers, simple)
        excluders: dict[int, list[int]] = defaultdict(list)
        for i in simple:
            for tid in self.subscribers[i].exclude_ids:  # a simple rule set holds no regex
                excluders[tid].append(i)
        self._excluders = {tid: tuple(owners) for tid, owners in excluders.items()}
        self._topic_via = [f"topic:{name}" for name in self.topic_names]
        self._singles: dict[tuple[int, bool], tuple[Match, ...]] = {}
        self._names = [c.rules.owner for c in self.subscribers]
        self._texts = [c.keywords for c in self.subscribers]
        self._topic_always = [i for i, c in enumerate(self.topics) if self._always(c)]
        self._always_subs = [i for i in general if self._always(self.subscribers[i])]
        self._followers: list[list[int]] = [[] for _ in self.topics]
        for i, c in enumerate(self.subscribers):
            for t in c.topics:
                self._followers[t].append(i)

        self._automaton = ahocorasick.Automaton()
        by_needle: dict[str, list[int]] = defaultdict(list)
        for term, tid in self._term_ids.items():
            for needle in term.needles():
                by_needle[needle].append(tid)
        for needle, ids in by_needle.items():
            self._automaton.add_word(needle, tuple(ids))
        self._empty = not by_needle
        if not self._empty:
            self._automaton.make_automaton()

    @property
    def owners(self) -> int:
        """How many subscribers and topics it holds: with none, no paper matches anything."""
        return len(self.subscribers) + len(self.topics)

    @property
    def size(self) -> int:
        """How many distinct terms the automaton holds."""
        return len(self._term_ids)

    # ------------------------------------------------------------ compiling

    def _ref(self, term: Term | Pattern) -> int | Pattern:
        """The term's id, given on first sight (a regex is its own reference)."""
        if isinstance(term, Pattern):
            return term
        return self._term_ids.setdefault(term, len(self._term_ids))

    def compiled(self, leaf: Leaf) -> Leaf:
        """``leaf`` (of a rule set this index holds) with its reference, as the evaluator needs it."""
        return leaf.with_ref(self._ref(leaf.term))

    def _tree(self, node: Node, positive: set[int | Pattern], polarity: bool = True) -> Node:
        """``node`` with every leaf compiled; the terms that can make it true go to ``positive``."""
        if isinstance(node, Leaf):
            leaf = self.compiled(node)
            if polarity:
                assert leaf.ref is not None
                positive.add(leaf.ref)
            return leaf
        if isinstance(node, Not):
            return Not(self._tree(node.child, positive, not polarity))
        children = tuple(self._tree(c, positive, polarity) for c in node.children)
        return And(children) if isinstance(node, And) else Or(children)

    def _compile(self, rules: RuleSet, topic_index: Mapping[str, int]) -> Compiled:
        keywords: Reasons = {}
        for leaf in rules.keywords:
            keywords.setdefault(self._ref(leaf.term), leaf.text)
        exclude = [self._ref(leaf.term) for leaf in rules.exclude]
        positive: set[int | Pattern] = set(keywords)
        query = None if rules.query is None else self._tree(rules.query, positive)
        exclude_patterns = tuple(ref for ref in exclude if isinstance(ref, Pattern))
        plain = not any(isinstance(ref, Pattern) for ref in keywords)
        return Compiled(
            rules=rules,
            query=query,
            keywords=keywords,
            positive=positive,
            topics=tuple(topic_index[name] for name in dict.fromkeys(rules.topics)),
            simple=query is None and plain and not exclude_patterns,
            plain_keywords=plain,
            exclude_ids=frozenset(ref for ref in exclude if isinstance(ref, int)),
            exclude_patterns=exclude_patterns,
        )

    @staticmethod
    def _users(compiled: Sequence[Compiled], which: Iterable[int]) -> dict[int, tuple[int, ...]]:
        users: dict[int, list[int]] = defaultdict(list)
        for i in which:
            for ref in compiled[i].positive:
                if isinstance(ref, int):
                    users[ref].append(i)
        return {tid: tuple(owners) for tid, owners in users.items()}

    @staticmethod
    def _always(c: Compiled) -> bool:
        """Evaluate this rule for every paper: it holds a regex, or is true when no term is found."""
        if any(isinstance(ref, Pattern) for ref in c.positive):
            return True
        return c.query is not None and holds(c.query, Hits.nothing())

    # ------------------------------------------------------------ matching

    def scan(self, title: str, abstract: str) -> Hits:
        """One pass of the automaton over the title and the abstract.

        They are scanned as one string, the title's words, a NUL, the
        abstract's words: no needle holds a NUL, so no hit spans both.
        """
        if self._empty:
            return Hits(set(), set(), title, abstract)
        head = haystack(title)
        cut = len(head)
        in_title: set[int] = set()
        in_abstract: set[int] = set()
        for end, ids in self._automaton.iter(head + "\0" + haystack(abstract)):
            (in_title if end < cut else in_abstract).update(ids)
        return Hits(in_title, in_abstract, title, abstract)

    def match(self, title: str, abstract: str) -> Result:
        """Every subscriber and topic that gets this paper, with why."""
        hits = self.scan(title, abstract)
        found = hits.title | hits.abstract

        topics: dict[int, _Why] = {}
        for i in _candidates(found, self._topic_users, self._topic_always):
            why = _evaluate(self.topics[i], hits, found, {})
            if why is not None:
                topics[i] = why

        subscribers = self._match_simple(hits, found)
        candidates = _candidates(found, self._users_of, self._always_subs)
        for i in topics:
            candidates.update(self._followers[i])
        for i in candidates:  # rules with a query or a regex, and followers of the topics that matched
            c = self.subscribers[i]
            why = _evaluate(c, hits, found, topics, self._topic_via)
            if why is None:
                subscribers.pop(i, None)
            else:
                subscribers[i] = _match(c.rules.owner, why, hits)
        matched_topics = [_match(self.topics[i].rules.owner, why, hits) for i, why in topics.items()]
        return Result(list(subscribers.values()), matched_topics)

    def _match_simple(self, hits: Hits, found: set[int]) -> dict[int, Match]:
        """The subscribers without a query or regex, by their keywords: any found, no exclude found.

        Most matches are one subscriber hit by one term. Those Match values are
        the same for every paper the term is found in (the score only depends
        on whether it is in the title), so they are made once per term and
        reused: a term's subscribers go into the result by one C-level
        ``dict.update``; the few excluded ones are taken out and those hit by
        several terms get a Match of their own.
        """
        users = self._simple_users
        present = [(tid, users[tid]) for tid in found if tid in users]
        if not present:
            return {}
        seen: set[int] = set()
        multi: set[int] = set()
        for _, owners in present:
            multi.update(seen.intersection(owners))
            seen.update(owners)
        in_title = hits.title
        out: dict[int, Match] = {}
        for tid, owners in present:
            out.update(zip(owners, self._single_matches(tid, tid in in_title), strict=True))
        excluders = self._excluders
        for tid in found:
            gone = excluders.get(tid)
            if gone is not None:
                for i in gone:
                    out.pop(i, None)
        for i in multi:
            if i in out:  # not excluded
                kw = self._texts[i]
                terms = {ref: text for ref, text in kw.items() if ref in found}  # the rule's order
                score = sum(TITLE_WEIGHT if ref in in_title else ABSTRACT_WEIGHT for ref in terms)
                out[i] = Match(self._names[i], tuple(terms.values()), score, _VIA_KEYWORDS)
        return out

    def _single_matches(self, tid: int, in_title: bool) -> tuple[Match, ...]:
        """The Match of each keyword-only subscriber of ``tid`` when only ``tid`` hit (cached)."""
        key = (tid, in_title)
        ready = self._singles.get(key)
        if ready is None:
            score = TITLE_WEIGHT if in_title else ABSTRACT_WEIGHT
            names, texts, new = self._names, self._texts, tuple.__new__
            ready = tuple(
                [
                    new(Match, (names[i], (texts[i][tid],), score, _VIA_KEYWORDS))
                    for i in self._simple_users[tid]
                ]
            )
            self._singles[key] = ready
        return ready


def _candidates(found: set[int], users: Mapping[int, tuple[int, ...]], always: list[int]) -> set[int]:
    out = set(always)
    for tid in found:
        who = users.get(tid)
        if who is not None:
            out.update(who)
    return out


def _evaluate(
    c: Compiled,
    hits: Hits,
    found: set[int],
    topics: Mapping[int, _Why],
    topic_names: Sequence[str] = (),
) -> _Why | None:
    """Does ``c`` get the paper? What brought it, or None."""
    if not c.exclude_ids.isdisjoint(found):
        return None
    if c.exclude_patterns and any(any(hits.pattern(p)) for p in c.exclude_patterns):
        return None
    terms: Reasons
    if c.simple and not c.topics:
        terms = {ref: text for ref, text in c.keywords.items() if ref in found}
        return (terms, ("keywords",)) if terms else None

    via: list[str] = []
    if c.plain_keywords:
        terms = {ref: text for ref, text in c.keywords.items() if ref in found}
    else:
        terms = {ref: text for ref, text in c.keywords.items() if any(hits.where(ref))}
    if terms:
        via.append("keywords")
    if c.query is not None and holds(c.query, hits):
        via.append("query")
        reasons(c.query, hits, terms)
    for t in c.topics:
        why = topics.get(t)
        if why is not None:
            via.append(topic_names[t])
            for ref, text in why[0].items():
                terms.setdefault(ref, text)
    return (terms, tuple(via)) if via else None


def _match(owner: str, why: _Why, hits: Hits) -> Match:
    terms, via = why
    in_title = hits.title
    score = sum(
        TITLE_WEIGHT
        if (ref in in_title if isinstance(ref, int) else hits.pattern(ref)[0])
        else ABSTRACT_WEIGHT
        for ref in terms
    )
    return Match(owner, tuple(terms.values()), score, via)
