"""The one evaluator of rules: does a query hold for a paper, and which terms made it hold.

A paper is scanned once (:meth:`service.rules.Index.scan`) into its
:class:`Hits`: the ids of the terms found in its title and in its abstract.
Everything else is read from those: :func:`holds` for a query's truth,
:func:`reasons` for the terms that made it true, :meth:`Hits.where` and
:meth:`Hits.has` for one leaf. Matching, ``explain`` and the score all ask
these, so the leaf semantics (a scope, a regex) are written once, here.

Leaves must be compiled (carry a ``ref``, see :class:`service.rules.Leaf`).
"""

from __future__ import annotations

from .query import And, Leaf, Node, Not
from .terms import Pattern

# The terms that brought a paper: the term's reference -> the term as the subscriber wrote it.
Reasons = dict[int | Pattern, str]


class Hits:
    """Which terms occur in one paper, and where."""

    __slots__ = ("_patterns", "abstract", "abstract_text", "title", "title_text")

    def __init__(self, title: set[int], abstract: set[int], title_text: str, abstract_text: str) -> None:
        self.title, self.abstract = title, abstract
        self.title_text, self.abstract_text = title_text, abstract_text
        self._patterns: dict[Pattern, tuple[bool, bool]] = {}

    @classmethod
    def nothing(cls) -> Hits:
        """A paper in which no term occurs (what is true of every paper?)."""
        return cls(set(), set(), "", "")

    def pattern(self, pattern: Pattern) -> tuple[bool, bool]:
        """Whether the regex is found in the title, and in the abstract (searched once)."""
        found = self._patterns.get(pattern)
        if found is None:
            found = (
                pattern.regex.search(self.title_text) is not None,
                pattern.regex.search(self.abstract_text) is not None,
            )
            self._patterns[pattern] = found
        return found

    def where(self, ref: int | Pattern) -> tuple[bool, bool]:
        """Whether the term ``ref`` occurs in the title, and in the abstract."""
        if isinstance(ref, Pattern):
            return self.pattern(ref)
        return ref in self.title, ref in self.abstract

    def has(self, leaf: Leaf) -> bool:
        """Whether the leaf is true: its term occurs where its scope looks."""
        ref = leaf.ref
        if ref is None:
            raise ValueError(f"{leaf} is not compiled: only the index's leaves can be evaluated")
        in_title, in_abstract = self.where(ref)
        scope = leaf.scope
        return (
            in_title if scope == "title" else in_abstract if scope == "abstract" else in_title or in_abstract
        )


def holds(node: Node, hits: Hits) -> bool:
    """Whether the (compiled) query ``node`` is true of the paper whose hits are ``hits``."""
    if isinstance(node, Leaf):
        return hits.has(node)
    if isinstance(node, Not):
        return not holds(node.child, hits)
    if isinstance(node, And):
        return all(holds(child, hits) for child in node.children)
    return any(holds(child, hits) for child in node.children)


def reasons(node: Node, hits: Hits, out: Reasons) -> None:
    """For a query ``node`` known to hold: add the terms that made it true to ``out``.

    Never the terms under a NOT, nor those of an OR's false branches.
    """
    if isinstance(node, Leaf):
        assert node.ref is not None
        out.setdefault(node.ref, node.text)
    elif isinstance(node, And):
        for child in node.children:
            reasons(child, hits, out)
    elif not isinstance(node, Not):
        for child in node.children:
            if holds(child, hits):
                reasons(child, hits, out)
