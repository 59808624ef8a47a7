"""Why one subscriber does or does not get one paper: ``paperboy explain``.

A line per rule and per term (hit, where, or missed), then the verdict. The
values come from the same compiled rules and the same evaluator the index
uses (:mod:`.evaluate`), and the verdict is the index's own answer, so
``explain`` can never disagree with what delivery does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .evaluate import Hits, holds
from .index import Compiled, Index, Match
from .query import Leaf, Node, Not, RuleSet


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


def _leaf_line(leaf: Leaf, hits: Hits) -> tuple[bool, str]:
    assert leaf.ref is not None
    found = _where_text(*hits.where(leaf.ref))
    if hits.has(leaf):
        return True, f"hit in {found}"
    if found:
        return False, f"missed: only in the {found}, and the rule looks in the {leaf.scope}"
    return False, "missed"


def _node_lines(node: Node, hits: Hits, depth: int, out: list[str]) -> None:
    """A line per node of a compiled query, its value from :func:`holds`."""
    pad = "  " * depth
    if isinstance(node, Leaf):
        out.append(f"{pad}{node}: {_leaf_line(node, hits)[1]}")
        return
    label = "NOT" if isinstance(node, Not) else type(node).__name__.upper()
    out.append(f"{pad}{label}: {'true' if holds(node, hits) else 'false'}")
    for child in (node.child,) if isinstance(node, Not) else node.children:
        _node_lines(child, hits, depth + 1, out)


def _term_lines(leaves: Sequence[Leaf], hits: Hits, pad: str, out: list[str]) -> list[Leaf]:
    """A line per term, hit or missed; returns the terms that hit."""
    hit = []
    for leaf in leaves:
        value, detail = _leaf_line(leaf, hits)
        if value:
            hit.append(leaf)
        out.append(f"{pad}  {leaf}: {detail}")
    return hit


def _rule_lines(index: Index, compiled: Compiled, hits: Hits, depth: int, out: list[str]) -> None:
    """The lines of one rule set as ``index`` holds it."""
    pad, rules = "  " * depth, compiled.rules
    if rules.keywords:
        at = len(out)
        out.append("")
        found = _term_lines([index.compiled(leaf) for leaf in rules.keywords], hits, pad, out)
        out[at] = f"{pad}keywords (any of): {'match' if found else 'no match'}"
    if compiled.query is not None:
        out.append(f"{pad}query {rules.query_text}: {'match' if holds(compiled.query, hits) else 'no match'}")
        _node_lines(compiled.query, hits, depth + 1, out)
    if rules.exclude:
        at = len(out)
        out.append("")
        found = _term_lines([index.compiled(leaf) for leaf in rules.exclude], hits, pad, out)
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
    _rule_lines(index, index.subscribers[0], hits, 0, lines)
    matched_topics = {m.owner for m in result.topics}
    for topic in index.topics:
        lines.append(
            f"topic {topic.rules.owner}: {'match' if topic.rules.owner in matched_topics else 'no match'}"
        )
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
