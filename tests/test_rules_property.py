"""Property: on random texts and random rules, the index agrees with a plain evaluation of the spec.

The reference below shares only the definition of a word with the code under
test (``service.text.folded_words``: what a word is and how it folds). It
knows nothing of needles, automata, term ids or candidate selection: it
walks each rule and looks for each term in the word list with a loop, the
way the spec states the semantics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from service.rules import Index, RuleSet
from service.text import folded_words

# Words that collide on purpose: plurals, accents, LaTeX escapes, phrase parts.
TEXT_WORDS = [
    "model", "models", "Model", "neural", "network", "networks", "Networks", "LLM", "LLMs", "llm",
    "TÜLU", 'T\\"ULU', "tulu", "reward", "rewards", "query", "queries", "bias", "biases", "state",
    "space", "jailbreak", "jailbreaking", "Jailbreaks", "survey", "of", "a", "GPT-4o", "gpt", "4",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "-", "_", ", ", ". ", " (", ") ", "/", ": "]
RULE_WORDS = ["model", "neural", "network", "llm", "tulu", "TÜLU", "reward", "query", "bias", "state",
              "space", "jailbreak", "survey", "gpt", "4", "of"]  # fmt: skip
REGEXES = ["gpt-?4o?", r"\bmodels?\b", "t.lu", r'T\\"U']


@st.composite
def texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(TEXT_WORDS), max_size=14))
    out = ""
    for word in words:
        out += draw(st.sampled_from(SEPARATORS)) + word
    return out


# ---------------------------------------------------------------- random rules, as data


@dataclass(frozen=True)
class RTerm:
    words: tuple[str, ...]
    prefix: bool = False
    scope: str = "any"
    regex: str | None = None

    def source(self) -> str:
        if self.regex is not None:
            body = f"/{self.regex}/"
        else:
            body = " ".join(self.words) + ("*" if self.prefix else "")
            if len(self.words) > 1 or self.prefix:
                body = f'"{body}"' if len(self.words) > 1 else body
        return body if self.scope == "any" else f"{self.scope}:{body}"


@dataclass(frozen=True)
class RNot:
    child: object
    dash: bool


@dataclass(frozen=True)
class RBool:
    op: str  # AND OR
    children: tuple[object, ...]
    implicit: bool  # AND written as adjacency


def render(node: object) -> str:
    if isinstance(node, RTerm):
        return node.source()
    if isinstance(node, RNot):
        inner = render(node.child)
        inner = inner if isinstance(node.child, RTerm | RNot) else f"({inner})"
        return f"-{inner}" if node.dash else f"NOT {inner}"
    assert isinstance(node, RBool)
    sep = " " if node.op == "AND" and node.implicit else f" {node.op} "
    return sep.join(f"({render(c)})" if isinstance(c, RBool) else render(c) for c in node.children)


terms = st.builds(
    RTerm,
    words=st.lists(st.sampled_from(RULE_WORDS), min_size=1, max_size=3).map(tuple),
    prefix=st.booleans(),
    scope=st.sampled_from(["any", "any", "title", "abstract"]),
    regex=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(REGEXES)),
)
queries = st.recursive(
    terms,
    lambda inner: st.one_of(
        st.builds(RNot, inner, st.booleans()),
        st.builds(
            RBool,
            st.sampled_from(["AND", "OR"]),
            st.lists(inner, min_size=2, max_size=3).map(tuple),
            st.booleans(),
        ),
    ),
    max_leaves=6,
)
keyword_terms = st.builds(
    RTerm,
    words=st.lists(st.sampled_from(RULE_WORDS), min_size=1, max_size=2).map(tuple),
    prefix=st.booleans(),
    regex=st.one_of(st.none(), st.none(), st.none(), st.none(), st.sampled_from(REGEXES)),
)


@dataclass(frozen=True)
class RRules:
    keywords: tuple[RTerm, ...]
    exclude: tuple[RTerm, ...]
    query: object | None
    topics: tuple[str, ...] = ()

    def build(self, owner: str) -> RuleSet:
        return RuleSet.build(
            owner,
            [k.source() for k in self.keywords],
            [k.source() for k in self.exclude],
            query=None if self.query is None else render(self.query),
            topics=self.topics,
        )


def rule_sets(topic_names: list[str]) -> st.SearchStrategy[RRules]:
    return st.builds(
        RRules,
        st.lists(keyword_terms, max_size=3).map(tuple),
        st.lists(keyword_terms, max_size=2).map(tuple),
        st.one_of(st.none(), queries),
        st.lists(st.sampled_from(topic_names), max_size=2).map(tuple) if topic_names else st.just(()),
    )


# ---------------------------------------------------------------- the plain evaluation


def plural_forms(word: str) -> set[str]:
    forms = {word + "s"}
    if re.search(r"(s|x|z|ch|sh)$", word):
        forms.add(word + "es")
    if re.search(r"[^aeiou]y$", word):
        forms.add(word[:-1] + "ies")
    return forms


def occurs(term: RTerm, text: str) -> bool:
    if term.regex is not None:
        return re.search(term.regex, text, re.IGNORECASE) is not None
    want = [w for part in term.words for w in folded_words(part)]
    have = folded_words(text)
    n = len(want)
    for i in range(len(have) - n + 1):
        if have[i : i + n - 1] != want[:-1]:
            continue
        last, wanted = have[i + n - 1], want[-1]
        if (last.startswith(wanted)) if term.prefix else (last == wanted or last in plural_forms(wanted)):
            return True
    return False


def holds(node: object, title: str, abstract: str) -> bool:
    if isinstance(node, RTerm):
        if node.scope == "title":
            return occurs(node, title)
        if node.scope == "abstract":
            return occurs(node, abstract)
        return occurs(node, title) or occurs(node, abstract)
    if isinstance(node, RNot):
        return not holds(node.child, title, abstract)
    assert isinstance(node, RBool)
    results = [holds(c, title, abstract) for c in node.children]
    return all(results) if node.op == "AND" else any(results)


def own_rules_hold(r: RRules, title: str, abstract: str) -> bool:
    return any(holds(k, title, abstract) for k in r.keywords) or (
        r.query is not None and holds(r.query, title, abstract)
    )


def excluded(r: RRules, title: str, abstract: str) -> bool:
    return any(holds(k, title, abstract) for k in r.exclude)


def reference(
    subscribers: list[RRules], topics: dict[str, RRules], title: str, abstract: str
) -> tuple[set[str], set[str]]:
    matched_topics = {
        name
        for name, t in topics.items()
        if own_rules_hold(t, title, abstract) and not excluded(t, title, abstract)
    }
    matched = {
        f"s{i}"
        for i, s in enumerate(subscribers)
        if (own_rules_hold(s, title, abstract) or any(t in matched_topics for t in s.topics))
        and not excluded(s, title, abstract)
    }
    return matched, matched_topics


# ---------------------------------------------------------------- the properties


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[RRules], dict[str, RRules]]:
    names = draw(st.lists(st.sampled_from(["safety", "vision", "nlp"]), unique=True, max_size=2))
    topics = {name: draw(rule_sets([])) for name in names}
    subscribers = draw(st.lists(rule_sets(names), min_size=1, max_size=5))
    return subscribers, topics


@settings(max_examples=400, deadline=None)
@given(scenarios(), texts(), texts())
def test_index_agrees_with_the_plain_evaluation(
    scenario: tuple[list[RRules], dict[str, RRules]], title: str, abstract: str
) -> None:
    subscribers, topics = scenario
    index = Index(
        [s.build(f"s{i}") for i, s in enumerate(subscribers)], [t.build(n) for n, t in topics.items()]
    )
    result = index.match(title, abstract)
    want_subscribers, want_topics = reference(subscribers, topics, title, abstract)
    assert {m.owner for m in result.subscribers} == want_subscribers
    assert {m.owner for m in result.topics} == want_topics


@settings(max_examples=300, deadline=None)
@given(st.lists(keyword_terms, min_size=1, max_size=4), texts(), texts())
def test_keyword_terms_and_score_agree(keywords: list[RTerm], title: str, abstract: str) -> None:
    rules = RRules(tuple(keywords), (), None)
    result = Index([rules.build("x")]).match(title, abstract).subscribers
    hit = {k.source(): k for k in keywords if holds(k, title, abstract)}
    if not hit:
        assert result == []
        return
    [m] = result

    def identity(k: RTerm) -> tuple[object, ...]:  # "TÜLU" and "tulu" are one term
        return (k.regex, tuple(w for part in k.words for w in folded_words(part)), k.prefix)

    distinct = {identity(k): k for k in hit.values()}
    assert set(m.terms) <= set(hit)
    assert {identity(hit[t]) for t in m.terms} == set(distinct)
    # score: every distinct term that brought the paper, 2 for a title hit, 1 otherwise
    assert m.score == sum(2 if occurs(k, title) else 1 for k in distinct.values())
