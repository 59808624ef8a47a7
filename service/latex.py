"""The LaTeX that digests' titles and abstracts carry, as a reader should read it.

Papers' abstracts come from arXiv sources and keep some of their markup:
``\\url{https://...}``, ````postive''``, ``T\\"ULU``, ``\\emph{not}``, ``50\\%``,
and links whose label was glued on (``https://github.com/x/y{Code}``).
:func:`tidy` turns them into what they stand for, for the email, the page and
the feeds; the store keeps the text as it came (matching folds LaTeX accents
itself, :mod:`service.text`).
"""

from __future__ import annotations

import functools
import re
import unicodedata

# \"U  \'e  \`a  \^o  \~n  \=a  \.z   and   \c{c} \v{s} \u{a} \H{o} \k{a} \r{a} \d{o} \b{o}
_ACCENT = re.compile(r"""\\([\"'`^~=.])\{?([A-Za-z])\}?|\\([cvuHkrdb])\{([A-Za-z])\}""")
_COMBINING = {
    '"': "\u0308",
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "c": "\u0327",
    "v": "\u030c",
    "u": "\u0306",
    "H": "\u030b",
    "k": "\u0328",
    "r": "\u030a",
    "d": "\u0323",
    "b": "\u0331",
}
_URL_COMMAND = re.compile(r"\\url\{([^{}\s]+)\}")
_HREF = re.compile(r"\\href\{([^{}\s]+)\}\{([^{}]*)\}")
_GLUED_LABEL = re.compile(r"(https?://[^\s{}<>\"']+)\{([^{}]{1,120})\}")  # url{label}: an \href gone wrong
_STYLE = re.compile(r"\\(?:emph|textit|textbf|texttt|textsc|textrm|mathrm|mathbf|mathit|text)\{([^{}]*)\}")
_DOUBLE_QUOTES = re.compile(r"``(.+?)''", re.S)
_SINGLE_QUOTES = re.compile(r"`([^`'\n]{1,80})'")
_ESCAPED = re.compile(r"\\([%&_#$])")
_ANY = re.compile(r"\\|``|`|\{")  # nothing to do without one of these


def _accented(match: re.Match[str]) -> str:
    command, letter = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return unicodedata.normalize("NFC", letter + _COMBINING[command])


@functools.lru_cache(maxsize=8192)  # one paper goes to many readers
def tidy(text: str) -> str:
    """``text`` with its LaTeX leftovers as the characters they stand for."""
    if not _ANY.search(text):
        return text
    text = _URL_COMMAND.sub(r"\1", text)
    text = _HREF.sub(r"\2 (\1)", text)
    text = _GLUED_LABEL.sub(r"\2 (\1)", text)
    text = _STYLE.sub(r"\1", text)
    text = _ACCENT.sub(_accented, text)
    text = _DOUBLE_QUOTES.sub("\u201c\\1\u201d", text)
    text = _SINGLE_QUOTES.sub("\u2018\\1\u2019", text)
    return _ESCAPED.sub(r"\1", text)
