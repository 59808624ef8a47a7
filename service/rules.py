"""The rule language, compiled into one index that reads each paper once.

Semantics (spec section 5; the README's "Matching" section says the same for users):

- A *term* matches whole words, case-insensitively, in the title or the
  abstract. A term of several words is a phrase: the words in sequence.
  ``-``, ``_``, spaces and punctuation between words are all the same.
  Diacritics and LaTeX accent escapes fold (``TÜLU`` = ``T\\"ULU`` = ``tulu``);
  see :mod:`service.text` for what a word is. A term also matches its plural;
  in a phrase only the last word may be plural. A trailing ``*`` makes the
  last word a prefix (``jailbreak*`` matches ``jailbreaking``).
  ``/regex/`` is a Python regular expression searched, case-insensitively,
  in the original (unfolded) text.
- ``keywords`` (any of), ``exclude`` (none of) and ``query``, a boolean
  language: ``AND``, ``OR``, ``NOT`` (also ``-term``), parentheses, quoted
  phrases, ``title:`` / ``abstract:`` scope on a term or a group. Precedence
  NOT > AND > OR; adjacent terms mean AND. Operators are upper case; a lower
  case ``and`` is a word to look for.
- A subscriber gets a paper when their keywords, their query or one of their
  topics match, and none of their ``exclude`` terms does (anywhere). A topic
  is a shared rule set with the same three keys.
- Score, for ranking: every distinct term that brought the paper counts 2
  when it occurs in the title, 1 when only in the abstract. Terms under a NOT
  never count.

How: every term of every subscriber and topic is compiled into one
Aho-Corasick automaton over folded text. A text is folded into its words
joined by single spaces, with a space at each end; a term's needle is its
folded words with a space at each end (a prefix: no space after the stem), so
every hit is a whole-word hit. The automaton reports overlapping hits, so
``neural network`` never hides ``network``. Matching a paper is one scan of
its title and one of its abstract, whatever the number of rules. Only rules
that one of the found terms can make true are evaluated: a rule with no term
found is false, unless it holds a regex or is true when nothing is found
(``NOT survey``); those few are evaluated for every paper.

Pure: no database, no settings, no clock.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

import ahocorasick

from .text import Token, haystack, plurals, tokens

TITLE_WEIGHT = 2
ABSTRACT_WEIGHT = 1

Scope = Literal["any", "title", "abstract"]
SCOPES: tuple[Scope, ...] = ("title", "abstract")
OPERATORS = ("AND", "OR", "NOT")


class RuleError(ValueError):
    """A rule that cannot be compiled: what is wrong, in which rule, at which column (1-based)."""

    def __init__(self, message: str, *, rule: str = "", column: int | None = None) -> None:
        self.message, self.rule, self.column = message, rule, column
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.column is None:
            return f"{self.message}: {self.rule!r}" if self.rule else self.message
        return f"column {self.column}: {self.message}\n    {self.rule}\n    {' ' * (self.column - 1)}^"


# ---------------------------------------------------------------- terms


@dataclass(frozen=True, slots=True)
class Term:
    """A word, phrase or prefix, folded: what the automaton looks for."""

    words: tuple[str, ...]
    prefix: bool = False  # the last word is a stem

    @classmethod
    def parse(cls, text: str) -> Term:
        """``reward model``, ``"reward model"``, ``jailbreak*``; raises :class:`RuleError`."""
        body = text.strip()
        if len(body) >= 2 and body[0] == body[-1] == '"':
            body = body[1:-1]
        prefix = body.endswith("*")
        if prefix:
            body = body[:-1]
        if "*" in body:
            raise RuleError("'*' may only end a term, as in jailbreak*", rule=text)
        words = tuple(t.folded for t in tokens(body))
        if not words:
            raise RuleError("holds no word to match", rule=text)
        return cls(words, prefix)

    def needles(self) -> list[str]:
        """The space-delimited folded strings this term matches."""
        stem = " " + " ".join(self.words)
        if self.prefix:
            return [stem]
        *head, last = self.words
        return [" " + " ".join([*head, form]) + " " for form in (last, *plurals(last))]

    @property
    def label(self) -> str:
        return " ".join(self.words) + ("*" if self.prefix else "")


@dataclass(frozen=True, slots=True)
class Pattern:
    """``/regex/``: searched case-insensitively in the original text."""

    source: str
    regex: re.Pattern[str] = field(compare=False, hash=False, repr=False)

    @classmethod
    def compile(cls, source: str, *, rule: str = "", column: int | None = None) -> Pattern:
        if not source:
            raise RuleError("empty regex //", rule=rule, column=column)
        try:
            return cls(source, re.compile(source, re.IGNORECASE))
        except re.error as exc:
            at = None if column is None or exc.pos is None else column + 1 + exc.pos
            raise RuleError(f"bad regex: {exc.msg}", rule=rule or f"/{source}/", column=at) from None

    @property
    def label(self) -> str:
        return f"/{self.source}/"


def parse_term(text: str) -> Term | Pattern:
    """One ``keywords`` or ``exclude`` entry: a word, phrase, prefix or ``/regex/``."""
    body = text.strip()
    if len(body) >= 2 and body[0] == body[-1] == "/":
        return Pattern.compile(body[1:-1], rule=text, column=text.index("/") + 1)
    return Term.parse(text)


# ---------------------------------------------------------------- the query language


@dataclass(frozen=True, slots=True)
class Leaf:
    """A term in a rule, with its scope and the text the subscriber wrote."""

    term: Term | Pattern
    scope: Scope = "any"
    text: str = ""

    def __str__(self) -> str:
        return self.text if self.scope == "any" else f"{self.scope}:{self.text}"


@dataclass(frozen=True, slots=True)
class Not:
    child: Node

    def __str__(self) -> str:
        return f"NOT {_group(self.child)}"


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " AND ".join(_group(c) for c in self.children)


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " OR ".join(_group(c) for c in self.children)


Node: TypeAlias = Leaf | Not | And | Or


def _group(node: Node) -> str:
    return f"({node})" if isinstance(node, And | Or) else str(node)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # ( ) AND OR NOT SCOPE WORD PHRASE REGEX
    value: str
    column: int  # 1-based
    text: str = ""  # as written, for leaves


_BARE_END = re.compile(r'[\s()"]')


def _lex(rule: str) -> Iterator[_Tok]:
    i, n = 0, len(rule)
    while i < n:
        ch = rule[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch in "()":
            yield _Tok(ch, ch, col)
            i += 1
        elif ch == "-" and i + 1 < n and not rule[i + 1].isspace():
            yield _Tok("NOT", "-", col)
            i += 1
        elif ch == '"':
            end = rule.find('"', i + 1)
            if end < 0:
                raise RuleError("this quote is never closed", rule=rule, column=col)
            yield _Tok("PHRASE", rule[i + 1 : end], col, rule[i : end + 1])
            i = end + 1
        elif ch == "/":
            end = i + 1
            while end < n and rule[end] != "/":
                end += 2 if rule[end] == "\\" else 1
            if end >= n:
                raise RuleError("this regex is never closed with /", rule=rule, column=col)
            yield _Tok("REGEX", rule[i + 1 : end], col, rule[i : end + 1])
            i = end + 1
        else:
            m = _BARE_END.search(rule, i)
            end = m.start() if m else n
            word = rule[i:end]
            scope, colon, rest = word.partition(":")
            if colon:
                if scope.lower() not in SCOPES:
                    raise RuleError(
                        f"unknown field {scope + ':'!r}; the fields are title: and abstract:"
                        ' (quote a term that holds a colon: "a:b")',
                        rule=rule,
                        column=col,
                    )
                yield _Tok("SCOPE", scope.lower(), col)
                i += len(scope) + 1
                if not rest and (i >= n or rule[i].isspace()):
                    raise RuleError(f"{scope}: needs a term right after it", rule=rule, column=col)
                continue
            if word.upper() in OPERATORS and word not in OPERATORS:
                raise RuleError(
                    f'operators are upper case: write {word.upper()}, or quote "{word}" to look for the word',
                    rule=rule,
                    column=col,
                )
            yield _Tok(word if word in OPERATORS else "WORD", word, col, word)
            i = end


class _Parser:
    """Recursive descent: or := and (OR and)*; and := unary ([AND] unary)*; unary := NOT unary | primary."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.toks = list(_lex(rule))
        self.pos = 0

    def error(self, message: str, column: int | None) -> RuleError:
        return RuleError(message, rule=self.rule, column=column)

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise self.error("the query is empty", None)
        node = self.parse_or()
        tok = self.peek()
        if tok is not None:
            assert tok.kind == ")"  # anything else continues an AND
            raise self.error("')' has no '(' to close", tok.column)
        return node

    def parse_or(self, after: _Tok | None = None) -> Node:
        items = [self.parse_and(after)]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.take()
            items.append(self.parse_and(after=tok))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self, after: _Tok | None = None) -> Node:
        items = [self.parse_unary(after)]
        while (tok := self.peek()) is not None and tok.kind not in ("OR", ")"):
            if tok.kind == "AND":
                self.take()
                items.append(self.parse_unary(tok))
            else:
                items.append(self.parse_unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self, after: _Tok | None = None) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "NOT":
            self.take()
            return Not(self.parse_unary(tok))
        return self.parse_primary(after)

    def parse_primary(self, after: _Tok | None = None, scope: Scope = "any") -> Node:
        tok = self.peek()
        if tok is None or tok.kind in ("OR", "AND", ")"):
            if after is not None:
                raise self.error(f"{after.value} needs a term after it", after.column)
            if tok is None:
                raise self.error("a term is missing at the end", len(self.rule) + 1)
            if tok.kind == ")":
                raise self.error("')' has no '(' to close", tok.column)
            raise self.error(f"{tok.value} needs a term before it", tok.column)
        self.take()
        if tok.kind == "SCOPE":
            if scope != "any":
                raise self.error("a field inside another field's scope", tok.column)
            inner: Scope = "title" if tok.value == "title" else "abstract"
            return self.parse_primary(tok, scope=inner)
        if tok.kind == "(":
            node = self.parse_or(after=tok)
            close = self.peek()
            if close is None or close.kind != ")":
                raise self.error("'(' is never closed", tok.column)
            self.take()
            if scope == "any":
                return node
            try:
                return _scoped(node, scope)
            except RuleError as exc:
                raise self.error(exc.message, after.column if after else tok.column) from None
        if tok.kind == "NOT":
            raise self.error("put the field inside the NOT: NOT title:term", tok.column)
        if tok.kind == "REGEX":
            return Leaf(Pattern.compile(tok.value, rule=self.rule, column=tok.column), scope, tok.text)
        try:
            term = Term.parse(tok.text)
        except RuleError as exc:
            raise self.error(f"{tok.text}: {exc.message}", tok.column) from None
        return Leaf(term, scope, tok.text)


def _scoped(node: Node, scope: Scope) -> Node:
    """Apply ``title:`` / ``abstract:`` to every term of a group."""
    if isinstance(node, Leaf):
        if node.scope not in ("any", scope):
            raise RuleError(f"{node} inside {scope}:( ... ) can never match")
        return Leaf(node.term, scope, node.text)
    if isinstance(node, Not):
        return Not(_scoped(node.child, scope))
    if isinstance(node, And):
        return And(tuple(_scoped(c, scope) for c in node.children))
    return Or(tuple(_scoped(c, scope) for c in node.children))


def parse_query(rule: str) -> Node:
    """Parse a ``query``; raises :class:`RuleError` naming the column."""
    return _Parser(rule).parse()


# ---------------------------------------------------------------- rule sets


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One subscriber's (or topic's) rules."""

    owner: str
    keywords: tuple[Leaf, ...] = ()
    exclude: tuple[Leaf, ...] = ()
    query: Node | None = None
    query_text: str = ""
    topics: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        owner: str,
        keywords: Iterable[str] = (),
        exclude: Iterable[str] = (),
        *,
        query: str | None = None,
        topics: Iterable[str] = (),
    ) -> RuleSet:
        def leaf(kind: str, i: int, text: str) -> Leaf:
            try:
                return Leaf(parse_term(text), "any", text.strip())
            except RuleError as exc:
                raise RuleError(f"{owner}: {kind}[{i}]: {exc}") from None

        try:
            parsed = parse_query(query) if query is not None and query.strip() else None
        except RuleError as exc:
            raise RuleError(f"{owner}: query: {exc}") from None
        return cls(
            owner,
            tuple(leaf("keywords", i, k) for i, k in enumerate(keywords)),
            tuple(leaf("exclude", i, k) for i, k in enumerate(exclude)),
            parsed,
            (query or "").strip(),
            tuple(topics),
        )


# ---------------------------------------------------------------- matching one paper


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


class Hits:
    """Which terms occur in one paper, and where."""

    __slots__ = ("_patterns", "abstract", "abstract_text", "title", "title_text")

    def __init__(self, title: set[int], abstract: set[int], title_text: str, abstract_text: str) -> None:
        self.title, self.abstract = title, abstract
        self.title_text, self.abstract_text = title_text, abstract_text
        self._patterns: dict[Pattern, tuple[bool, bool]] = {}

    def pattern(self, pattern: Pattern) -> tuple[bool, bool]:
        found = self._patterns.get(pattern)
        if found is None:
            found = (
                pattern.regex.search(self.title_text) is not None,
                pattern.regex.search(self.abstract_text) is not None,
            )
            self._patterns[pattern] = found
        return found


# A compiled leaf: (term id, scope) for a term, (pattern, scope) for a regex.
_CLeaf = tuple[int | Pattern, Scope]
# A compiled query: (terms in the title, terms in the abstract, the hits) -> true?
_Test = Callable[[set[int], set[int], Hits], bool]


def _closure(tree: object) -> _Test:
    """The query tree as nested closures: evaluated without dispatching on node kinds."""
    kind = tree[0]  # type: ignore[index]
    if kind == "leaf":
        ref, scope = tree[1]  # type: ignore[index]
        if isinstance(ref, Pattern):
            pattern = ref
            if scope == "title":
                return lambda t, a, h: h.pattern(pattern)[0]
            if scope == "abstract":
                return lambda t, a, h: h.pattern(pattern)[1]
            return lambda t, a, h: any(h.pattern(pattern))
        if scope == "title":
            return lambda t, a, h: ref in t
        if scope == "abstract":
            return lambda t, a, h: ref in a
        return lambda t, a, h: ref in t or ref in a
    if kind == "not":
        inner = _closure(tree[1])  # type: ignore[index]
        return lambda t, a, h: not inner(t, a, h)
    parts = [_closure(c) for c in tree[1]]  # type: ignore[index]
    test = parts[0]
    for part in parts[1:]:
        test = _both(test, part) if kind == "and" else _either(test, part)
    return test


_Collect = Callable[[set[int], set[int], Hits, dict[int | Pattern, str]], None]


def _collector(tree: object) -> _Collect:
    """For a query (sub)tree known to be true: add the terms that made it true to ``out``.

    Never the terms under a NOT, nor those of an OR's false branches.
    """
    kind = tree[0]  # type: ignore[index]
    if kind == "leaf":
        ref, text = tree[1][0], tree[2]  # type: ignore[index]

        def leaf(t: set[int], a: set[int], h: Hits, out: dict[int | Pattern, str]) -> None:
            out.setdefault(ref, text)

        return leaf
    if kind == "not":
        return lambda t, a, h, out: None
    children = [(_closure(c), _collector(c)) for c in tree[1]]  # type: ignore[index]
    if kind == "and":

        def every(t: set[int], a: set[int], h: Hits, out: dict[int | Pattern, str]) -> None:
            for _, collect in children:
                collect(t, a, h, out)

        return every

    def some(t: set[int], a: set[int], h: Hits, out: dict[int | Pattern, str]) -> None:
        for test, collect in children:
            if test(t, a, h):
                collect(t, a, h, out)

    return some


def _both(f: _Test, g: _Test) -> _Test:
    return lambda t, a, h: f(t, a, h) and g(t, a, h)


def _either(f: _Test, g: _Test) -> _Test:
    return lambda t, a, h: f(t, a, h) or g(t, a, h)


def _leaf_where(leaf: _CLeaf, hits: Hits) -> tuple[bool, bool]:
    ref, _ = leaf
    if isinstance(ref, Pattern):
        return hits.pattern(ref)
    return ref in hits.title, ref in hits.abstract


def _leaf_true(leaf: _CLeaf, hits: Hits) -> bool:
    in_title, in_abstract = _leaf_where(leaf, hits)
    scope = leaf[1]
    return in_title if scope == "title" else in_abstract if scope == "abstract" else in_title or in_abstract


@dataclass(slots=True)
class _Compiled:
    """One rule set with its terms replaced by the index's term ids."""

    rules: RuleSet
    keywords: dict[int | Pattern, str]  # term -> as written
    query: object  # the query as a tree of ("leaf", _CLeaf, text) ("not", t) ("and", ts) ("or", ts)
    positive: set[int | Pattern]  # every term that can make this rule true
    topics: tuple[int, ...]  # indexes into Index.topics
    simple: bool  # no query, no regex: matched by any keyword that occurred (or a followed topic)
    test: _Test | None = None  # the query as nested closures, for speed
    plain_keywords: bool = True  # no regex among the keywords
    exclude_ids: frozenset[int] = frozenset()  # the exclude terms that are not regexes
    exclude_patterns: tuple[Pattern, ...] = ()
    collect: _Collect | None = None  # the terms that made the query true


# What brought a paper to one rule set: the matched terms (term -> as written) and the rules.
_Why = tuple[dict[int | Pattern, str], tuple[str, ...]]


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
    def size(self) -> int:
        """How many distinct terms the automaton holds."""
        return len(self._term_ids)

    # ------------------------------------------------------------ compiling

    def _ref(self, term: Term | Pattern) -> int | Pattern:
        if isinstance(term, Pattern):
            return term
        return self._term_ids.setdefault(term, len(self._term_ids))

    def _tree(self, node: Node, positive: set[int | Pattern], polarity: bool = True) -> object:
        if isinstance(node, Leaf):
            ref = self._ref(node.term)
            if polarity:
                positive.add(ref)
            return ("leaf", (ref, node.scope), node.text)
        if isinstance(node, Not):
            return ("not", self._tree(node.child, positive, not polarity))
        kind = "and" if isinstance(node, And) else "or"
        return (kind, tuple(self._tree(c, positive, polarity) for c in node.children))

    def _compile(self, rules: RuleSet, topic_index: Mapping[str, int]) -> _Compiled:
        keywords: dict[int | Pattern, str] = {}
        for leaf in rules.keywords:
            keywords.setdefault(self._ref(leaf.term), leaf.text)
        exclude = [self._ref(leaf.term) for leaf in rules.exclude]
        positive: set[int | Pattern] = set(keywords)
        query = None if rules.query is None else self._tree(rules.query, positive)
        exclude_patterns = tuple(ref for ref in exclude if isinstance(ref, Pattern))
        plain = not any(isinstance(ref, Pattern) for ref in keywords)
        return _Compiled(
            rules=rules,
            keywords=keywords,
            query=query,
            positive=positive,
            topics=tuple(topic_index[name] for name in dict.fromkeys(rules.topics)),
            simple=query is None and plain and not exclude_patterns,
            test=None if query is None else _closure(query),
            plain_keywords=plain,
            exclude_ids=frozenset(ref for ref in exclude if isinstance(ref, int)),
            exclude_patterns=exclude_patterns,
            collect=None if query is None else _collector(query),
        )

    @staticmethod
    def _users(compiled: Sequence[_Compiled], which: Iterable[int]) -> dict[int, tuple[int, ...]]:
        users: dict[int, list[int]] = defaultdict(list)
        for i in which:
            for ref in compiled[i].positive:
                if isinstance(ref, int):
                    users[ref].append(i)
        return {tid: tuple(owners) for tid, owners in users.items()}

    @staticmethod
    def _always(c: _Compiled) -> bool:
        """Evaluate this rule for every paper: it holds a regex, or is true when no term is found."""
        if any(isinstance(ref, Pattern) for ref in c.positive):
            return True
        return c.query is not None and _eval(c.query, Hits(set(), set(), "", ""))

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

    def where(self, term: Term | Pattern, hits: Hits) -> tuple[bool, bool]:
        """Whether ``term`` occurs in the title, and in the abstract, of the scanned paper."""
        if isinstance(term, Pattern):
            return hits.pattern(term)
        tid = self._term_ids.get(term)
        return (tid in hits.title, tid in hits.abstract) if tid is not None else (False, False)

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


def _eval(tree: object, hits: Hits) -> bool:
    kind = tree[0]  # type: ignore[index]
    if kind == "leaf":
        return _leaf_true(tree[1], hits)  # type: ignore[index]
    if kind == "not":
        return not _eval(tree[1], hits)  # type: ignore[index]
    if kind == "and":
        return all(_eval(c, hits) for c in tree[1])  # type: ignore[index]
    return any(_eval(c, hits) for c in tree[1])  # type: ignore[index]


def _evaluate(
    c: _Compiled,
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
    terms: dict[int | Pattern, str]
    if c.simple and not c.topics:
        terms = {ref: text for ref, text in c.keywords.items() if ref in found}
        return (terms, ("keywords",)) if terms else None

    via: list[str] = []
    if c.plain_keywords:
        terms = {ref: text for ref, text in c.keywords.items() if ref in found}
    else:
        terms = {ref: text for ref, text in c.keywords.items() if _leaf_true((ref, "any"), hits)}
    if terms:
        via.append("keywords")
    if c.test is not None and c.test(hits.title, hits.abstract, hits):
        assert c.collect is not None
        via.append("query")
        c.collect(hits.title, hits.abstract, hits, terms)
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


# ---------------------------------------------------------------- explaining one paper


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``owner`` does or does not get one paper: a line per rule and term, and the verdict."""

    owner: str
    match: Match | None
    lines: list[str]

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def _where_text(in_title: bool, in_abstract: bool) -> str:
    places = [name for name, yes in (("title", in_title), ("abstract", in_abstract)) if yes]
    return " and ".join(places)


def _leaf_line(index: Index, leaf: Leaf, hits: Hits) -> tuple[bool, str]:
    in_title, in_abstract = index.where(leaf.term, hits)
    found = _where_text(in_title, in_abstract)
    true = {"title": in_title, "abstract": in_abstract}.get(leaf.scope, in_title or in_abstract)
    if true:
        return True, f"hit in {found}"
    if found:
        return False, f"missed: only in the {found}, and the rule looks in the {leaf.scope}"
    return False, "missed"


def _node_lines(index: Index, node: Node, hits: Hits, depth: int, out: list[str]) -> bool:
    pad = "  " * depth
    if isinstance(node, Leaf):
        value, detail = _leaf_line(index, node, hits)
        out.append(f"{pad}{node}: {detail}")
        return value
    at = len(out)
    out.append("")
    if isinstance(node, Not):
        value = not _node_lines(index, node.child, hits, depth + 1, out)
        label = "NOT"
    else:
        values = [_node_lines(index, c, hits, depth + 1, out) for c in node.children]
        value, label = (all(values), "AND") if isinstance(node, And) else (any(values), "OR")
    out[at] = f"{pad}{label}: {'true' if value else 'false'}"
    return value


def _term_lines(index: Index, leaves: Sequence[Leaf], hits: Hits, pad: str, out: list[str]) -> list[Leaf]:
    """A line per term, hit or missed; returns the terms that hit."""
    hit = []
    for leaf in leaves:
        value, detail = _leaf_line(index, leaf, hits)
        if value:
            hit.append(leaf)
        out.append(f"{pad}  {leaf}: {detail}")
    return hit


def _rule_lines(index: Index, rules: RuleSet, hits: Hits, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    if rules.keywords:
        at = len(out)
        out.append("")
        found = _term_lines(index, rules.keywords, hits, pad, out)
        out[at] = f"{pad}keywords (any of): {'match' if found else 'no match'}"
    if rules.query is not None:
        at = len(out)
        out.append("")
        value = _node_lines(index, rules.query, hits, depth + 1, out)
        out[at] = f"{pad}query {rules.query_text}: {'match' if value else 'no match'}"
    if rules.exclude:
        at = len(out)
        out.append("")
        found = _term_lines(index, rules.exclude, hits, pad, out)
        verdict = f"excluded by {', '.join(map(str, found))}" if found else "nothing excluded"
        out[at] = f"{pad}exclude (none of): {verdict}"


def explain(rules: RuleSet, topics: Mapping[str, RuleSet], title: str, abstract: str) -> Explanation:
    """Each rule of ``rules`` with the terms that hit or missed, and the verdict.

    The verdict is the index's own answer for this paper, so ``explain``
    can never disagree with what delivery does.
    """
    followed = [topics[name] for name in dict.fromkeys(rules.topics)]
    index = Index([rules], followed)
    hits = index.scan(title, abstract)
    result = index.match(title, abstract)
    match = result.subscribers[0] if result.subscribers else None
    lines: list[str] = []
    _rule_lines(index, rules, hits, 0, lines)
    matched_topics = {m.owner for m in result.topics}
    for topic in followed:
        lines.append(f"topic {topic.owner}: {'match' if topic.owner in matched_topics else 'no match'}")
        _rule_lines(index, topic, hits, 1, lines)
    if not rules.keywords and rules.query is None and not followed:
        lines.append("no rules: this subscriber has no keywords, query or topics")
    if match is not None:
        terms = ", ".join(match.terms) or "none"
        lines.append(
            f"verdict: gets this paper, via {', '.join(match.via)}; terms {terms}; score {match.score}"
        )
    elif any(line.startswith("exclude (none of): excluded") for line in lines):
        lines.append("verdict: does not get this paper: an exclude term hit")
    else:
        lines.append("verdict: does not get this paper: no rule matched")
    return Explanation(rules.owner, match, lines)


# ---------------------------------------------------------------- highlighting


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
        """The span in the original text of a hit ending at ``end_index`` (inclusive)."""
        first = bisect.bisect_left(self.starts, end_index - len(needle) + 2)
        last = bisect.bisect_right(self.starts, end_index) - 1
        return self.tokens[first].start, self.tokens[last].end


def highlight_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """Where ``terms`` (as :func:`parse_term` reads them) occur in ``text``: sorted, merged spans."""
    spans: list[tuple[int, int]] = []
    automaton = ahocorasick.Automaton()
    for raw in terms:
        try:
            term = parse_term(raw)
        except RuleError:
            continue
        if isinstance(term, Pattern):
            spans.extend(m.span() for m in term.regex.finditer(text) if m.end() > m.start())
            continue
        for needle in term.needles():
            automaton.add_word(needle, needle)
    if len(automaton):
        automaton.make_automaton()
        folded = Folded.of(text)
        spans.extend(folded.span(end, needle) for end, needle in automaton.iter(folded.haystack))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
