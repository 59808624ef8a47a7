"""The rules: which subscribers and topics get a paper, and why.

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

The package, a module per idea (all pure: no database, no settings, no clock):

- :mod:`.terms`: a term (word, phrase, prefix) or ``/regex/``;
- :mod:`.query`: the query language, parsed into typed nodes; a rule set;
- :mod:`.evaluate`: the one evaluator of those nodes over a paper's hits;
- :mod:`.index`: every rule set compiled into one automaton, matching a paper;
- :mod:`.explain`: why one subscriber does or does not get one paper;
- :mod:`.highlight`: where terms occur in a text, for marking them up.
"""

from .evaluate import Hits, holds
from .explain import Explanation, explain
from .highlight import highlight_spans
from .index import Index, Match, Result
from .query import And, Leaf, Node, Not, Or, RuleSet, parse_query
from .terms import Pattern, RuleError, Term, parse_term

__all__ = [
    "And",
    "Explanation",
    "Hits",
    "Index",
    "Leaf",
    "Match",
    "Node",
    "Not",
    "Or",
    "Pattern",
    "Result",
    "RuleError",
    "RuleSet",
    "Term",
    "explain",
    "highlight_spans",
    "holds",
    "parse_query",
    "parse_term",
]
