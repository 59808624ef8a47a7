"""Parse a digest file (a text dump of the Hugging Face "Daily Papers" page).

Pure: bytes in, entries and problems out; no database, no clock (the file's
modification time is passed in to place the date line in a year).

The format, as seen in real files: page boilerplate (``new``, ``Subscribe``,
``by AK and the research community``...), an optional date line (``Mar 14``),
then entries, each a title line followed by its abstract line, with blank
lines between. The parser promises:

- a damaged file never loses its good entries, and never raises anything but
  :class:`DigestError` (for a file with nothing to read: empty or binary);
- every problem is reported as a :class:`Problem` naming the file and line;
- a title with no abstract (a cut-off download) is reported and not returned,
  so that the completed file brings the paper whole later;
- memory stays bounded by the longest line (capped at ``MAX_LINE`` bytes),
  whatever the size of the file: entries are yielded as they are read;
- a file that is not a digest raises :class:`NotADigest`: one that does not
  begin like the page (its boilerplate or a date line) before anything is
  yielded, one whose title/abstract pairs mostly do not look like papers (a
  title of a sensible length, an abstract of several sentences) once it has
  been read. The caller takes it whole or not at all (:mod:`service.ingest`
  stores a file in one transaction), so a README or a CSV in the inbox
  brings no "papers".
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice
from typing import BinaryIO

MAX_LINE = 1 << 20  # a line longer than this is no title nor abstract
TITLE_MAX = 300  # the longest real titles are ~150 characters

BOILERPLATE = frozenset(
    {
        "new",
        "get trending papers in your email inbox!",
        "subscribe",
        "daily papers",
        "by ak and the research community",
        "byak and the research community",
    }
)
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DATE_LINE = re.compile(r"^([A-Za-z]{3})[a-z]*\.?\s+(\d{1,2})$")
_SENTENCE_END = (".", "!", "?", ".)", '."')


class DigestError(Exception):
    """A file that holds nothing to ingest (empty, binary, not a digest). Names the file."""


class NotADigest(DigestError):
    """Text that is not a Daily Papers digest (notes, a CSV, source code, another site's page)."""


# What a paper looks like on the page (every entry of the real digests does, with room to
# spare: titles of 5+ words and 31-144 characters, abstracts of 5+ sentences and 1,300+
# characters). A file is a digest when at least half of its entries look like this.
PAPER_TITLE_WORDS = 2
PAPER_TITLE_CHARS = (8, TITLE_MAX)
PAPER_ABSTRACT_SENTENCES = 2
PAPER_ABSTRACT_CHARS = 150
_NOT_A_TITLE_START = tuple("#*->|`{}[]=/\\!@%^&;,")
_SENTENCE = re.compile(r"[.!?][\"')\]]*(?:\s|$)")


def not_a_paper(title: str, abstract: str) -> str | None:
    """Why a title/abstract pair does not look like a paper of the page (None: it does)."""
    if title.startswith(_NOT_A_TITLE_START) or title.endswith((":", ";", "{", ",")):
        return "the title starts or ends like markup or code"
    shortest, longest = PAPER_TITLE_CHARS
    if len(title.split()) < PAPER_TITLE_WORDS or not shortest <= len(title) <= longest:
        return f"a title has {PAPER_TITLE_WORDS}+ words and {shortest}-{longest} characters"
    if len(abstract) < PAPER_ABSTRACT_CHARS or not _enough_sentences(abstract):
        return f"an abstract has {PAPER_ABSTRACT_SENTENCES}+ sentences and {PAPER_ABSTRACT_CHARS}+ characters"
    return None


def _enough_sentences(text: str) -> bool:
    """Whether ``text`` holds ``PAPER_ABSTRACT_SENTENCES`` sentence ends (:data:`_SENTENCE`).
    Each ". " is one, and no two of them overlap: found that many times by a string search
    (nearly every abstract, at C speed), the pattern need not run."""
    at = 0
    for _ in range(PAPER_ABSTRACT_SENTENCES):
        at = text.find(". ", at)
        if at < 0:
            ends = islice(_SENTENCE.finditer(text), PAPER_ABSTRACT_SENTENCES)  # enough to tell
            return sum(1 for _ in ends) == PAPER_ABSTRACT_SENTENCES
        at += 2
    return True


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Entry:
    title: str
    abstract: str
    line: int  # line of the title, 1-based
    date: date | None  # the digest's date line, placed in a year


@dataclass(slots=True)
class DigestFile:
    """What a parse found in one digest file: its date line and its problems, filled as
    :func:`parse` is iterated (the entries themselves are what it yields)."""

    name: str
    date: date | None = None
    problems: list[Problem] = field(default_factory=list)


def year_for(month: int, day: int, *, mtime: datetime) -> date | None:
    """The latest ``month``/``day`` not after ``mtime`` plus one day.

    The day of grace covers a digest written just before midnight in a zone
    ahead of the machine's. Feb 29 goes back to the latest leap year.
    """
    limit = (mtime + timedelta(days=1)).date()
    for year in range(limit.year, limit.year - 9, -1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue  # Feb 29 in a common year, or Apr 31
        if candidate <= limit:
            return candidate
    return None


def _looks_like_abstract(text: str) -> bool:
    return len(text) > TITLE_MAX or (len(text) > 120 and text.endswith(_SENTENCE_END))


_ASCII_SPACES_BUT_SPACE = b"\t\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.split() splits on, in ASCII, but " "
_SPACE_BYTES = [bytes([b]) for b in _ASCII_SPACES_BUT_SPACE]


def _no_odd_spaces(text: bytes) -> bool:
    """Whether ``text`` holds no ASCII space but " " (tabs, CR...): a byte search for each
    (memchr, at C speed) over a whole block costs less than one pass over each line."""
    return not any(space in text for space in _SPACE_BYTES)


def _single_spaced(line: bytes) -> bool:
    """Whether the spaces of ``line`` are single spaces between words."""
    return b"  " not in line and not line.startswith(b" ") and not line.endswith(b" ")


BLOCK = MAX_LINE  # bytes read at a time: a line within one block is never too long


def _lines(stream: BinaryIO) -> Iterator[tuple[Sequence[bytes | None], bool]]:
    """Every line of ``stream``, without its newline, read a block at a time (a call per line
    cost more), in runs: the lines within a block, told once for them all whether the block
    has :func:`_no_odd_spaces`; or the one line that spans two blocks, not told (False).
    None stands for a line longer than ``MAX_LINE``, never held whole: memory stays bounded
    by the block."""
    rest: bytes | None = b""  # the start of a line that goes on in the next block (None: too long)
    while block := stream.read(BLOCK):
        cut = block.find(b"\n")
        if cut < 0:  # the block holds no newline: the line goes on
            rest = None if rest is None or len(rest) + len(block) > MAX_LINE else rest + block
            continue
        yield [None if rest is None or len(rest) + cut > MAX_LINE else rest + block[:cut]], False
        end = block.rfind(b"\n")
        if cut < end:
            whole = block[cut + 1 : end]
            yield whole.split(b"\n"), _no_odd_spaces(whole)
        rest = block[end + 1 :]
    if rest is None or rest:
        yield [rest], False


def _read_lines(stream: BinaryIO, digest: DigestFile) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number, cleaned text, blank line before it) for non-blank lines."""
    blank_before = True
    number = 0
    for run, no_odd_spaces in _lines(stream):
        for raw in run:
            number += 1
            if raw is None:
                digest.problems.append(
                    Problem(digest.name, number, f"line longer than {MAX_LINE} bytes; skipped")
                )
                continue
            # Nearly every line: ASCII, single-spaced; nothing to decode with care, nothing to fold.
            if raw.isascii() and (no_odd_spaces or _no_odd_spaces(raw)) and _single_spaced(raw):
                text = raw.decode("ascii")
            else:
                text = _folded(raw, number, digest)
            if not text:
                blank_before = True
                continue
            yield number, text, blank_before
            blank_before = False


def _folded(raw: bytes, number: int, digest: DigestFile) -> str:
    """Line ``number`` decoded (UTF-8, else Windows-1252 with a problem noted), each run of
    CR, tabs, NBSP and other spaces one space, none at either end."""
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("cp1252", errors="replace")
        digest.problems.append(
            Problem(
                digest.name,
                number,
                f"bytes that are not UTF-8 at column {exc.start + 1}; read as Windows-1252, check the text",
            )
        )
    return " ".join(text.split())


def _paragraphs(lines: Iterator[tuple[int, str, bool]], digest: DigestFile) -> Iterator[tuple[int, str]]:
    """Join runs of non-blank lines (a hard-wrapped paragraph) into one; yield (first line, text)."""
    start, size = 0, 0
    parts: list[str] = []
    for number, text, blank_before in lines:
        if blank_before and parts:
            yield start, " ".join(parts)
            parts, size = [], 0
        if not parts:
            start = number
        if size + len(text) > MAX_LINE:
            digest.problems.append(
                Problem(digest.name, start, f"paragraph longer than {MAX_LINE} bytes; skipped")
            )
            parts, size = [], 0
            continue
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield start, " ".join(parts)


def _sniff(stream: BinaryIO, name: str) -> None:
    head = stream.read(8192)
    stream.seek(0)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise DigestError(f"{name}: the file is empty; nothing to ingest")
    if b"\x00" in head:
        raise DigestError(f"{name}: this is a binary file, not a digest; nothing ingested")


def parse(stream: BinaryIO, digest: DigestFile, *, mtime: datetime) -> Iterator[Entry]:
    """Yield the good entries of the digest in ``stream``; record problems in ``digest``.

    Raises :class:`DigestError` before yielding anything when the file has
    nothing to read. ``mtime`` is the file's modification time (aware).
    """
    _sniff(stream, digest.name)
    name = digest.name
    title: tuple[int, str] | None = None  # a title waiting for its abstract
    in_header = True
    page_like = False  # the page's boilerplate or a date line came before the first entry
    entries = 0
    unlike: list[tuple[int, str, str]] = []  # (line, title, why) of entries that look like no paper

    for number, text in _paragraphs(_read_lines(stream, digest), digest):
        if in_header and text.lower() in BOILERPLATE:
            page_like = True
            continue
        in_header = False
        date_match = _DATE_LINE.match(text)
        if date_match and date_match.group(1).lower() in _MONTHS:
            page_like = True
            month = _MONTHS[date_match.group(1).lower()]
            placed = year_for(month, int(date_match.group(2)), mtime=mtime)
            if placed is None:
                digest.problems.append(Problem(name, number, f"date line {text!r} is no date"))
            else:
                digest.date = placed
            continue
        if not page_like:
            raise NotADigest(
                f"{name}: not a digest: it does not begin like the Daily Papers page "
                f"(its boilerplate, such as 'Daily Papers' or 'Subscribe', or a date line such as "
                f"'Mar 14'); line {number} reads {text[:60]!r}"
            )

        if title is None:
            if _looks_like_abstract(text):
                digest.problems.append(Problem(name, number, "an abstract with no title before it; skipped"))
            else:
                title = (number, text)
            continue

        # A title is waiting. A short paragraph that does not end a sentence
        # is the next title, so the waiting one lost its abstract.
        if _looks_like_abstract(text) or text.endswith(_SENTENCE_END):
            entries += 1
            why = not_a_paper(title[1], text)
            if why is not None:
                unlike.append((title[0], title[1], why))
            yield Entry(title[1], text, title[0], digest.date)
            title = None
            continue
        digest.problems.append(
            Problem(name, title[0], f"title {title[1][:80]!r} has no abstract; not stored")
        )
        title = (number, text)

    if title is not None:
        digest.problems.append(
            Problem(
                name,
                title[0],
                f"title {title[1][:80]!r} has no abstract (cut-off download?); not stored",
            )
        )
    if entries == 0:
        raise NotADigest(f"{name}: not a digest: no title followed by its abstract anywhere in it")
    if len(unlike) * 2 > entries:
        line, first, why = unlike[0]
        raise NotADigest(
            f"{name}: not a digest: {len(unlike)} of its {entries} title/abstract pairs do not look "
            f"like papers ({why}; line {line}: {first[:60]!r})"
        )


def parse_bytes(data: bytes, *, name: str, mtime: datetime) -> tuple[DigestFile, list[Entry]]:
    """Parse a whole digest held in memory (tests, small files)."""
    import io

    digest = DigestFile(name)
    entries = list(parse(io.BytesIO(data), digest, mtime=mtime))
    return digest, entries
