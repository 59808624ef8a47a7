from datetime import UTC, date, datetime

import pytest

from service.digest import MAX_LINE, DigestError, parse_bytes, year_for
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
