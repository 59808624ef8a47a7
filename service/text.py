"""What a word is: the one definition shared by paper keys, rules and highlighting.

A word is a maximal run of letters and digits (any script). LaTeX accent
escapes such as ``\\"U`` or ``\\c{c}`` are part of the word they sit in.
Everything else -- spaces, ``-``, ``_``, punctuation -- only separates words,
which is why ``instruction-following`` and ``instruction following`` are the
same two words.

Folding a word: Unicode NFKC, LaTeX accent escapes dropped to their letter,
casefolded, diacritics removed. So ``TÜLU``, ``T\\"ULU`` and ``Tulu`` all fold
to ``tulu``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

# \"U  \'e  \`a  \^o  \~n  \=a  \.z   and   \c{c} \v{s} \u{a} \H{o} \k{a} ...
_LATEX_ACCENT = r"""\\[\"'`^~=.]\{?[A-Za-z]\}?|\\[cvuHkbdrt]\{[A-Za-z]\}"""
_WORD = re.compile(rf"(?:{_LATEX_ACCENT}|[^\W_]|[\u0300-\u036f])+")
_LATEX_STRIP = re.compile(rf"{_LATEX_ACCENT}")
# In ASCII text with no backslash (nearly every title and abstract) a word is a run of
# letters and digits and folds to its lower case: one regular expression over the lowered text.
_ASCII_WORD = re.compile(r"[a-z0-9]+")


def _latex_letter(match: re.Match[str]) -> str:
    return next(ch for ch in reversed(match.group(0)) if ch.isalpha())


def fold_word(word: str) -> str:
    """Fold one word (as found by :func:`words`) to its comparable form."""
    word = _LATEX_STRIP.sub(_latex_letter, word)
    word = unicodedata.normalize("NFKC", word).casefold()
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True, slots=True)
class Token:
    """A word of some text: its folded form and where it stands in the original."""

    folded: str
    start: int
    end: int


@functools.lru_cache(maxsize=1 << 16)
def _fold_token(raw: str) -> str:
    if raw.isascii() and "\\" not in raw:
        return raw.lower()  # the common case, and what the general path gives for it
    # NFKC can turn one glyph into several words' worth ("½" -> "1⁄2");
    # keep only the letters and digits so a token never holds a separator.
    return "".join(ch for ch in fold_word(raw) if ch.isalnum())


def tokens(text: str) -> list[Token]:
    """Split ``text`` into words, keeping each word's span in ``text``."""
    out = []
    for m in _WORD.finditer(text):
        folded = _fold_token(m.group(0))
        if folded:
            out.append(Token(folded, m.start(), m.end()))
    return out


def folded_words(text: str) -> list[str]:
    """The folded words of ``text``, in order."""
    if text.isascii() and "\\" not in text:
        return _ASCII_WORD.findall(text.lower())  # what the general path gives, five times faster
    return _any_folded_words(text)


def _any_folded_words(text: str) -> list[str]:
    return [f for f in map(_fold_token, _WORD.findall(text)) if f]


def haystack(text: str) -> str:
    """``text`` as the matcher reads it: its folded words joined by single spaces, a space at each end."""
    return " " + " ".join(folded_words(text)) + " "


def paper_key(title: str) -> str:
    """The identity of a paper: its title's folded words joined by single spaces."""
    return " ".join(folded_words(title))


def plurals(word: str) -> tuple[str, ...]:
    """The plural spellings of a folded word that count as the word itself.

    English regular plurals only: ``model -> models``, ``bias -> biases``,
    ``query -> queries``. Irregular plurals (``analysis -> analyses``) are
    not guessed; write both forms in the rule if they matter.
    """
    forms = [word + "s"]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.append(word + "es")
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    return tuple(forms)
