"""Terms: what a rule looks for in a paper.

A :class:`Term` is a word, a phrase or a prefix (``jailbreak*``), folded as
:mod:`service.text` folds the papers' text, so that a hit is a whole-word
hit; it also matches its plural (in a phrase, the last word's).
A :class:`Pattern` is a ``/regex/``, searched case-insensitively in the
original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..text import plurals, tokens


class RuleError(ValueError):
    """A rule that cannot be compiled: what is wrong, in which rule, at which column (1-based)."""

    def __init__(self, message: str, *, rule: str = "", column: int | None = None) -> None:
        self.message, self.rule, self.column = message, rule, column
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.column is None:
            return f"{self.message}: {self.rule!r}" if self.rule else self.message
        return f"column {self.column}: {self.message}\n    {self.rule}\n    {' ' * (self.column - 1)}^"


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
