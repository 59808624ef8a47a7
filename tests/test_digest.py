import io
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.digest import (
    _SENTENCE,
    MAX_LINE,
    PAPER_ABSTRACT_SENTENCES,
    DigestError,
    DigestFile,
    NotADigest,
    _enough_sentences,
    _lines,
    _read_lines,
    not_a_paper,
    parse_bytes,
    year_for,
)
from tests.helpers import FIXTURES

MTIME = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TITLE_A = "A Study of Things"
ABS_A = "We study things in depth and at length, and we find that things are studied. " * 3
TITLE_B = "Another Paper on Stuff"
ABS_B = "Stuff matters. We show how stuff matters across many settings and measure it carefully. " * 3


def digest_text(
    *paragraphs: str, header: str = "new\n\nSubscribe\n\nby AK and the research community\n\n"
) -> str:
    return header + "\n\n".join(paragraphs)


@pytest.mark.parametrize(
    ("name", "entries", "when"),
    [
        ("digest-a.txt", 39, date(2026, 3, 14)),
        ("digest-b.txt", 89, None),
        ("digest-c.txt", 63, date(2026, 4, 28)),
    ],
)
def test_real_digests_parse_whole(name: str, entries: int, when: date | None) -> None:
    digest, found = parse_bytes((FIXTURES / name).read_bytes(), name=name, mtime=MTIME)
    assert digest.problems == []
    assert len(found) == entries
    assert digest.date == when
    assert all(len(e.abstract) > 1000 for e in found)
    assert not any(e.title.lower() in ("subscribe", "new", "daily papers") for e in found)
    assert found[0].date == when


def test_first_entry_of_a_real_digest() -> None:
    _, found = parse_bytes((FIXTURES / "digest-a.txt").read_bytes(), name="a", mtime=MTIME)
    assert found[0].title.startswith("SemiCD-VL: Visual-Language Model Guidance")
    assert found[0].abstract.startswith("Change Detection (CD) aims to identify")
    assert found[0].line == 11


@pytest.mark.parametrize(
    ("variant", "transform"),
    [
        ("crlf", lambda t: t.replace("\n", "\r\n")),
        ("bom", lambda t: "\ufeff" + t),
        ("trailing spaces", lambda t: t.replace("\n", "  \t\n")),
        ("runs of blank lines", lambda t: t.replace("\n\n", "\n\n\n\n \n")),
        ("no date line", lambda t: t.replace("Mar 14\n\n", "")),
    ],
)
def test_harmless_variations_change_nothing(variant: str, transform) -> None:  # type: ignore[no-untyped-def]
    text = digest_text("Mar 14", TITLE_A, ABS_A, TITLE_B, ABS_B)
    digest, found = parse_bytes(transform(text).encode(), name="x.txt", mtime=MTIME)
    assert digest.problems == []
    assert [(e.title, e.abstract) for e in found] == [(TITLE_A, ABS_A.strip()), (TITLE_B, ABS_B.strip())]


LINE_CHARACTERS = st.sampled_from(list("ab. Z9-") + list("\t\r\x0b\x0c\x1c\x1f\x85\xa0\u2003é"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=LINE_CHARACTERS, max_size=12), min_size=1, max_size=6))
@example(["Plain words here.", " lead", "trail ", "two  spaces", "tab\there", "nbsp\xa0here"])
def test_every_line_reads_as_its_words_joined_by_single_spaces(lines: list[str]) -> None:
    """The reader's quick path for plain lines gives what folding every line's spaces gives."""
    data = "\n".join(lines).encode()
    read = [(n, text) for n, text, _ in _read_lines(io.BytesIO(data), DigestFile("x.txt"))]
    # (the file's lines end at "\n" only: \r, \x1c or \x85 inside one is a space to fold)
    folded = [(n, " ".join(line.split())) for n, line in enumerate(data.decode().split("\n"), 1)]
    assert read == [(n, text) for n, text in folded if text]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"b", b" ", b"\n"]), max_size=60).map(b"".join),
    st.integers(1, 9).flatmap(lambda longest: st.tuples(st.integers(1, longest), st.just(longest))),
)
@example(b"abcdefghij\nab\n\nabcdefghijklmnop", (4, 4))
def test_lines_across_blocks_are_whole_and_overlong_ones_dropped(data: bytes, sizes: tuple[int, int]) -> None:
    """Read a block at a time (a block no longer than the longest line, as in the module), every
    line comes whole, whatever the blocks cut; a line longer than MAX_LINE comes as None,
    however many blocks it spans."""
    block, longest = sizes
    from service import digest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digest, "BLOCK", block)
        patch.setattr(digest, "MAX_LINE", longest)
        found = [line for run, _ in _lines(io.BytesIO(data)) for line in run]
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()  # a final newline ends the last line; it starts none
    assert found == [None if len(line) > longest else line for line in expected]


def test_title_without_abstract_at_the_end_is_reported_not_stored() -> None:
    text = digest_text(TITLE_A, ABS_A, TITLE_B)
    digest, found = parse_bytes(text.encode(), name="cut.txt", mtime=MTIME)
    assert [e.title for e in found] == [TITLE_A]
    assert len(digest.problems) == 1
    problem = digest.problems[0]
    assert (problem.file, problem.line) == ("cut.txt", 11)
    assert "no abstract" in problem.message and TITLE_B in problem.message
    assert str(problem).startswith("cut.txt:11: ")


def test_title_without_abstract_in_the_middle_keeps_the_rest() -> None:
    text = digest_text(TITLE_A, TITLE_B, ABS_B)
    digest, found = parse_bytes(text.encode(), name="m.txt", mtime=MTIME)
    assert [(e.title, e.abstract) for e in found] == [(TITLE_B, ABS_B.strip())]
    assert [p.line for p in digest.problems] == [7]


def test_a_short_abstract_is_still_an_abstract() -> None:
    text = digest_text(TITLE_A, "We show it works.", TITLE_B, ABS_B)
    digest, found = parse_bytes(text.encode(), name="s.txt", mtime=MTIME)
    assert digest.problems == []
    assert [e.abstract for e in found] == ["We show it works.", ABS_B.strip()]


def test_bytes_that_are_not_utf8_are_reported_and_the_entry_kept() -> None:
    data = (
        digest_text(TITLE_A, ABS_A, TITLE_B, ABS_B).encode().replace(b"Stuff matters", b"Stuff \xe9 matters")
    )
    digest, found = parse_bytes(data, name="latin.txt", mtime=MTIME)
    assert len(found) == 2
    assert found[1].abstract.startswith("Stuff é matters")
    assert [(p.line, "not UTF-8" in p.message) for p in digest.problems] == [(13, True)]


def test_a_hard_wrapped_abstract_is_joined() -> None:
    text = digest_text(TITLE_A, "First half of the abstract,\nsecond half of it.", TITLE_B, ABS_B)
    _, found = parse_bytes(text.encode(), name="w.txt", mtime=MTIME)
    assert found[0].abstract == "First half of the abstract, second half of it."


@pytest.mark.parametrize("data", [b"", b"   \n\n\r\n", b"\xef\xbb\xbf"])
def test_empty_file_is_an_error_naming_it(data: bytes) -> None:
    with pytest.raises(DigestError, match=r"^e\.txt: the file is empty"):
        parse_bytes(data, name="e.txt", mtime=MTIME)


def test_binary_file_is_an_error_naming_it() -> None:
    with pytest.raises(DigestError, match=r"^b\.bin: this is a binary file"):
        parse_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), name="b.bin", mtime=MTIME)


def test_an_overlong_line_is_skipped_and_the_rest_kept() -> None:
    text = digest_text(TITLE_A, ABS_A, "x" * (MAX_LINE + 10), TITLE_B, ABS_B)
    digest, found = parse_bytes(text.encode(), name="h.txt", mtime=MTIME)
    assert [e.title for e in found] == [TITLE_A, TITLE_B]
    assert [p.line for p in digest.problems] == [11]
    assert "longer than" in digest.problems[0].message


def test_html_and_header_injection_in_titles_are_kept_as_text() -> None:
    title = "<script>alert(1)</script> Bcc: x@evil.example"
    _, found = parse_bytes(digest_text(title, ABS_A).encode(), name="i.txt", mtime=MTIME)
    assert found[0].title == title


@pytest.mark.parametrize(
    ("month", "day", "mtime", "expected"),
    [
        (3, 14, datetime(2026, 11, 21, tzinfo=UTC), date(2026, 3, 14)),
        (12, 31, datetime(2026, 1, 2, tzinfo=UTC), date(2025, 12, 31)),
        (1, 3, datetime(2026, 1, 2, 23, 0, tzinfo=UTC), date(2026, 1, 3)),  # a day of grace
        (1, 4, datetime(2026, 1, 2, 23, 0, tzinfo=UTC), date(2025, 1, 4)),
        (2, 29, datetime(2026, 11, 21, tzinfo=UTC), date(2024, 2, 29)),
        (4, 31, datetime(2026, 11, 21, tzinfo=UTC), None),
    ],
)
def test_year_of_the_date_line(month: int, day: int, mtime: datetime, expected: date | None) -> None:
    assert year_for(month, day, mtime=mtime) == expected


def test_date_line_is_placed_by_file_mtime() -> None:
    digest, found = parse_bytes(
        digest_text("Dec 30", TITLE_A, ABS_A).encode(),
        name="d.txt",
        mtime=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert digest.date == date(2026, 12, 30) == found[0].date


# ---------------------------------------------------------------- files that are not digests

REAL = (FIXTURES / "digest-a.txt").read_text()
ENTRIES = REAL.split("Mar 14\n\n", 1)[1]  # the real entries, without the page's header
FIRST_TITLE = ENTRIES.split("\n\n")[0]
FIRST_ABSTRACT = ENTRIES.split("\n\n")[1]


def arxiv_listing() -> str:
    """Another site's digest: the same papers as an arXiv-style listing."""
    paras = [p for p in ENTRIES.split("\n\n") if p.strip()]
    return "\n\n".join(
        f"arXiv:2403.{10000 + i}\nTitle: {t}\nAuthors: A. Author, B. Author\nAbstract: {a}"
        for i, (t, a) in enumerate(zip(paras[::2], paras[1::2], strict=False))
    )


NOT_DIGESTS = {
    "readme": (Path(__file__).parent.parent / "README.md").read_text(),
    "markdown notes": "# Reading group\n\n## Matching\n\nWe talked about the matching. " * 5,
    "csv": "title,abstract,url\n"
    + "".join(f'"{FIRST_TITLE} {i}","{FIRST_ABSTRACT[:300]}",https://x.org/{i}\n' for i in range(20)),
    "python source": (Path(__file__).parent.parent / "service" / "digest.py").read_text(),
    "another site": "Trending Papers\n\nPapers with Code\n\n" + ENTRIES,
    "arxiv listing": arxiv_listing(),
    "entries without the page": ENTRIES,
    "page header, then notes": "Daily Papers\n\n"
    + "\n\n".join(f"- item {i}\n\n{'x' * 40} and then some." for i in range(10)),
    "page header, then prose": "Mar 14\n\n"
    + "\n\n".join(
        f"Note {i}\n\nShort line without much in it, and no second sentence at all here." for i in range(6)
    ),
    "page header only": "new\n\nSubscribe\n\nDaily Papers\n\nMar 14\n",
}


@pytest.mark.parametrize("text", NOT_DIGESTS.values(), ids=NOT_DIGESTS.keys())
def test_text_that_is_not_a_digest_is_refused_whole(text: str) -> None:
    with pytest.raises(NotADigest, match=r"^junk\.txt: not a digest: "):
        parse_bytes(text.encode(), name="junk.txt", mtime=MTIME)


def test_the_refusal_says_why_and_where() -> None:
    with pytest.raises(NotADigest) as err:
        parse_bytes(NOT_DIGESTS["readme"].encode(), name="notes.txt", mtime=MTIME)
    assert "does not begin like the Daily Papers page" in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(NotADigest) as err:
        parse_bytes(NOT_DIGESTS["page header, then prose"].encode(), name="p.txt", mtime=MTIME)
    assert "6 of its 6 title/abstract pairs do not look like papers" in str(err.value)
    assert "line 3: 'Note 0'" in str(err.value)


def test_a_digest_with_a_few_odd_entries_is_still_a_digest() -> None:
    odd = REAL.replace(FIRST_ABSTRACT, "Short.", 1)
    digest, found = parse_bytes(odd.encode(), name="a.txt", mtime=MTIME)
    assert len(found) == 39 and digest.problems == []


@pytest.mark.parametrize(
    ("title", "abstract", "why"),
    [
        ("## Matching", ABS_A, "markup"),
        ("Mamba", ABS_A, "words"),
        ("A Study of Things", "We show it works.", "sentences"),
        ("x" * 301 + " y", ABS_A, "characters"),
        (TITLE_A, ABS_A, None),
        (FIRST_TITLE, FIRST_ABSTRACT, None),
    ],
)
def test_what_a_paper_looks_like(title: str, abstract: str, why: str | None) -> None:
    found = not_a_paper(title, abstract)
    assert (found is None) if why is None else (found is not None and why in found)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=list(". !?\"')]\nab"), max_size=30))
@example("A. B. ")
@example("A.) B.")
@example("e.g.  x")
def test_enough_sentences_is_what_the_pattern_counts(text: str) -> None:
    """The quick count of ". " agrees with the sentence pattern, whatever the text."""
    ends = len(list(islice(_SENTENCE.finditer(text), PAPER_ABSTRACT_SENTENCES)))
    assert _enough_sentences(text) == (ends == PAPER_ABSTRACT_SENTENCES)
