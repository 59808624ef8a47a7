"""Rules and terms in words, for readers: a feed's subtitle, a category, the reader's page.

``"reward model"`` reads *reward model*, ``jailbreak*`` reads *jailbreak…*,
``title:mamba`` reads *mamba*; a subscriber's rules read as a sentence
("Papers that mention mamba or state space model; and papers of the topic
llm-safety. Never a paper that mentions medical.").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

_SCOPES = ("title:", "abstract:")


@functools.lru_cache(maxsize=4096)  # a term is read for every paper it brings
def readable(term: str) -> str | None:
    """A rule's term as a reader reads it; None for a ``/regex/`` (no reader reads those)."""
    text = term.strip()
    for scope in _SCOPES:
        text = text.removeprefix(scope)
    if text.startswith("/"):
        return None
    text = text.strip('"').strip()
    if text.endswith("*"):
        text = text[:-1].rstrip() + "…"
    return " ".join(text.split()) or None


def readable_terms(terms: Sequence[str]) -> list[str]:
    """Each term once, readable, in the order given (patterns left out)."""
    out: list[str] = []
    for term in terms:
        word = readable(term)
        if word and word not in out:
            out.append(word)
    return out


def either(words: Sequence[str], conjunction: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def describe(
    *,
    keywords: Sequence[str] = (),
    query: str | None = None,
    topics: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> str:
    """What a subscriber's (or a topic's) rules let through, in a sentence or two."""
    ways = []
    words = readable_terms(keywords)
    if words:
        ways.append(f"papers that mention {either(words)}")
    if query:
        ways.append(f"papers matching the query {query.strip()}")
    if topics:
        ways.append(f"papers of the topic{'s' if len(topics) > 1 else ''} {either(list(topics), 'and')}")
    if not ways:
        return "No papers: there are no rules yet."
    sentence = ways[0] if len(ways) == 1 else "; ".join(ways[:-1]) + "; and " + ways[-1]
    sentence = sentence[0].upper() + sentence[1:] + "."
    never = readable_terms(exclude)
    if never:
        sentence += f" Never a paper that mentions {either(never)}."
    return sentence
