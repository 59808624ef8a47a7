"""The query language, parsed into typed nodes; a subscriber's (or topic's) rule set.

``AND``, ``OR``, ``NOT`` (also ``-term``), parentheses, quoted phrases,
``title:`` / ``abstract:`` scope on a term or a group; precedence NOT > AND >
OR; adjacent terms mean AND. Operators are upper case; a lower case ``and``
is a word to look for. Errors name the column (:class:`RuleError`).

A query is a tree of :class:`Leaf`, :class:`Not`, :class:`And` and
:class:`Or`; :mod:`.evaluate` says whether it holds for a paper.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .terms import Pattern, RuleError, Term, parse_term

Scope = Literal["any", "title", "abstract"]
SCOPES: tuple[Scope, ...] = ("title", "abstract")
OPERATORS = ("AND", "OR", "NOT")


@dataclass(frozen=True, slots=True)
class Leaf:
    """A term in a rule, with its scope and the text the subscriber wrote.

    ``ref`` is what the index looks the term up by: its term id in the
    automaton (a regex is its own reference). A parsed leaf has none; the
    index compiles each rule into leaves that have one (:meth:`with_ref`).
    """

    term: Term | Pattern
    scope: Scope = "any"
    text: str = ""
    ref: int | Pattern | None = field(default=None, compare=False)

    def with_ref(self, ref: int | Pattern) -> Leaf:
        return Leaf(self.term, self.scope, self.text, ref)

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


MAX_NESTING = 64  # a query nested deeper is refused (a rule needs a handful; Python's stack, thousands)


class _Parser:
    """Recursive descent: or := and (OR and)*; and := unary ([AND] unary)*; unary := NOT unary | primary."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.toks = list(_lex(rule))
        self.pos = 0
        self.depth = 0  # groups and NOTs open around the current token

    def deeper(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nested more than {MAX_NESTING} deep (groups and NOTs)", tok.column)

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
            self.deeper(tok)
            node = Not(self.parse_unary(tok))
            self.depth -= 1
            return node
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
            self.deeper(tok)
            node = self.parse_or(after=tok)
            self.depth -= 1
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
