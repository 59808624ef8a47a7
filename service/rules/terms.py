"""Terms: what a rule looks for in a paper.

A :class:`Term` is a word, a phrase or a prefix (``jailbreak*``), folded as
:mod:`service.text` folds the papers' text, so that a hit is a whole-word
hit; it also matches its plural (in a phrase, the last word's).
A :class:`Pattern` is a ``/regex/``, searched case-insensitively in the
original text by RE2, in linear time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

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
        """``reward model``, ``"reward model"``, ``jailbreak*``; raises :class:`RuleError`.
        Remembered by text: 10,000 subscribers repeat a few thousand terms, and each is
        parsed when the configuration is checked and again when the index is built."""
        return _parse_term(text)

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


@functools.lru_cache(maxsize=1 << 16)
def _parse_term(text: str) -> Term:
    """:meth:`Term.parse`, remembered (a Term is frozen: one may be shared)."""
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
    return Term(words, prefix)


REGEX_MEMORY = 8 << 20  # bytes a regex's compiled program may take (RE2's default)


@dataclass(frozen=True, slots=True)
class Pattern:
    """``/regex/``: searched case-insensitively in the original text, by RE2 (google-re2),
    whose matching takes time linear in the text whatever the pattern: a rule such as
    ``/(a+)+$/`` cannot hang a run (Python's engine backtracks, and took hours on an
    abstract of forty a's). RE2 has no backreferences or lookaround (refused here, with
    the reason), its ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII (``\\pL`` is any letter),
    and a pattern whose program needs more than ``REGEX_MEMORY`` bytes is refused."""

    source: str
    regex: Any = field(compare=False, hash=False, repr=False)  # a compiled re2 pattern

    @classmethod
    def compile(cls, source: str, *, rule: str = "", column: int | None = None) -> Pattern:
        import re2  # only configurations with a regex pay for it

        if not source:
            raise RuleError("empty regex //", rule=rule, column=column)
        options = re2.Options()
        options.case_sensitive = False
        options.log_errors = False
        options.max_mem = REGEX_MEMORY
        try:
            return cls(source, re2.compile(source, options))
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise RuleError(
                f"bad regex: {reason} (paperboy's regex engine, RE2, has no backreferences or lookaround)",
                rule=rule or f"/{source}/",
                column=column,
            ) from None

    @property
    def label(self) -> str:
        return f"/{self.source}/"


def parse_term(text: str) -> Term | Pattern:
    """One ``keywords`` or ``exclude`` entry: a word, phrase, prefix or ``/regex/``."""
    body = text.strip()
    if len(body) >= 2 and body[0] == body[-1] == "/":
        return Pattern.compile(body[1:-1], rule=text, column=text.index("/") + 1)
    return Term.parse(text)
