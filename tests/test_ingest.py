"""The inbox and ingestion into a real store (SQLite and PostgreSQL)."""

import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from service import store
from service.ingest import ingest_file, scan_inbox
from service.match import Matcher
from service.rulebook import build_index
from service.settings import parse_settings
from tests.helpers import FIXED_NOW, FIXTURES, copy_digest, local_yaml, sync
from tests.oracle import naive_match


def counts(engine: Engine) -> dict:
    with store.reading(engine) as s:
        return store.counts(session=s)


def test_scan_inbox_takes_settled_files_and_skips_partial_ones(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    old = time.time() - 60
    for name in ("a.txt", "b.part", "c.tmp", ".hidden.txt"):
        copy_digest("digest-a.txt", inbox, as_name=name, mtime=old)
    copy_digest("digest-b.txt", inbox, as_name="fresh.txt")  # just written
    (inbox / "sub").mkdir()
    ready, waiting = scan_inbox(inbox, settle=5, now=time.time())
    assert [p.name for p in ready] == ["a.txt"]
    assert [p.name for p in waiting] == ["fresh.txt"]
    ready, waiting = scan_inbox(inbox, settle=5, now=time.time() + 10)
    assert [p.name for p in ready] == ["a.txt", "fresh.txt"] and waiting == []


def test_scan_inbox_names_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope is not a folder"):
        scan_inbox(tmp_path / "nope", settle=5, now=time.time())


def test_ingesting_the_same_file_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = copy_digest("digest-a.txt", tmp_path)
    first = ingest_file(engine, path, at=FIXED_NOW)
    assert (first.status, first.entries, first.new_papers) == ("ingested", 39, 39)
    before = counts(engine)
    again = ingest_file(engine, path, at=FIXED_NOW)
    assert again.status == "known"
    copy = copy_digest("digest-a.txt", tmp_path, as_name="renamed.txt")
    assert ingest_file(engine, copy, at=FIXED_NOW).status == "known"
    assert counts(engine) == before == {**before, "papers": 39, "files": 1}


def test_papers_seen_before_are_not_stored_again(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, copy_digest("digest-a.txt", tmp_path), at=FIXED_NOW)
    report = ingest_file(engine, copy_digest("digest-c.txt", tmp_path), at=FIXED_NOW)
    assert (report.entries, report.new_papers) == (63, 52)  # 11 of digest-c were in digest-a
    assert counts(engine)["papers"] == 39 + 52


def test_a_changed_file_is_ingested_again_idempotently(engine: Engine, tmp_path: Path) -> None:
    path = copy_digest("digest-a.txt", tmp_path)
    text = path.read_text()
    cut = text[: text.index("\n\nGS-DiT")]  # a cut-off download: one whole entry
    path.write_text(cut + "\n\nGS-DiT: Advancing Video Generation\n")
    first = ingest_file(engine, path, at=FIXED_NOW)
    assert (first.entries, len(first.problems)) == (1, 1)
    assert "has no abstract" in first.problems[0].message
    path.write_text(text)  # the completed download
    second = ingest_file(engine, path, at=FIXED_NOW)
    assert (second.status, second.new_papers) == ("ingested", 38)
    assert counts(engine)["papers"] == 39


def test_other_spellings_are_the_same_paper(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, copy_digest("digest-a.txt", tmp_path), at=FIXED_NOW)
    respelled = tmp_path / "respelled.txt"
    text = (FIXTURES / "digest-a.txt").read_text()
    text = text.replace("TÜLU 3: Pushing Frontiers", 'T\\"ULU 3 -- pushing frontiers')
    text = text.replace("Learning from Future: A Novel", "LEARNING FROM FUTURE  a novel")
    respelled.write_text(text)
    report = ingest_file(engine, respelled, at=FIXED_NOW)
    assert (report.status, report.entries, report.new_papers) == ("ingested", 39, 0)


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("empty.txt", b"", "the file is empty"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(300), "binary file"),
    ],
)
def test_unreadable_files_are_rejected_with_their_name(
    engine: Engine, tmp_path: Path, name: str, data: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        report = ingest_file(engine, path, at=FIXED_NOW)
    assert report.status == "rejected" and error in report.error and name in report.error  # type: ignore[operator]
    assert [r.msg for r in caplog.records] == ["ingest.rejected"]
    # Not taken as known: the same file (moved back into the inbox, or named again) is
    # rejected again, never skipped in silence; the inbox moves it aside (test_cycle).
    assert ingest_file(engine, path, at=FIXED_NOW).status == "rejected"
    assert counts(engine)["files"] == 0


def test_damaged_file_keeps_its_good_entries_and_logs_each_problem(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = (FIXTURES / "digest-b.txt").read_bytes()
    damaged = b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n")
    damaged = damaged.replace(b"Non-Fungible Tokens", b"Non-Fungible \xff Tokens", 1)
    damaged += b"\r\n\r\n\r\n\r\nA Title Whose Abstract Never Came"
    path = tmp_path / "damaged.txt"
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        report = ingest_file(engine, path, at=FIXED_NOW)
    assert (report.entries, report.new_papers) == (89, 89)
    problems = [
        (r.fields["line"], r.fields["problem"].split(";")[0])
        for r in caplog.records
        if r.msg == "digest.problem"
    ]  # type: ignore[attr-defined]
    assert problems == [
        (13, "bytes that are not UTF-8 at column 14"),
        (369, "title 'A Title Whose Abstract Never Came' has no abstract (cut-off download?)"),
    ]
    assert all(r.fields["file"] == str(path) for r in caplog.records if r.msg == "digest.problem")  # type: ignore[attr-defined]


def test_a_large_digest_streams(engine: Engine, tmp_path: Path) -> None:
    """Thousands of entries in one file, one transaction, batched inserts."""
    entries = [
        f"Paper number {i} on topic {i % 7}\n\n" + ("Words of the abstract. " * 40) for i in range(3000)
    ]
    path = tmp_path / "big.txt"
    path.write_text("new\n\nSubscribe\n\n" + "\n\n".join(entries))
    report = ingest_file(engine, path, at=FIXED_NOW)
    assert (report.entries, report.new_papers, report.problems) == (3000, 3000, [])
    assert counts(engine)["papers"] == 3000


def test_a_file_replaced_while_it_is_read_is_left_for_later(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.ingest as ingest

    path = copy_digest("digest-a.txt", tmp_path)
    real = ingest.file_hash
    monkeypatch.setattr(
        ingest, "file_hash", lambda p: real(p)[::-1]
    )  # the hash taken before no longer matches
    assert ingest_file(engine, path, at=FIXED_NOW).status == "changed"
    assert counts(engine)["papers"] == 0
    monkeypatch.undo()
    assert ingest_file(engine, path, at=FIXED_NOW).status == "ingested"


def _alice_matcher(tmp_path: Path, engine: Engine) -> Matcher:
    """A matcher for one subscriber who wants "model", synced into the store."""
    settings = parse_settings(
        local_yaml(tmp_path, "  - email: alice@example.org\n    keywords: [model]\n"),
        source="t.yaml",
        base=tmp_path,
    )
    with store.transaction(engine) as s:
        sync(s, [("alice@example.org", None)])
    index = build_index(settings)
    return Matcher(lambda: index, at=FIXED_NOW)


def test_papers_are_matched_as_they_are_stored(engine: Engine, tmp_path: Path) -> None:
    """One pass: each new paper is matched in the file's transaction and stored as matched;
    a paper already known is neither stored nor matched again."""
    match = _alice_matcher(tmp_path, engine)
    first = ingest_file(engine, copy_digest("digest-a.txt", tmp_path), at=FIXED_NOW, match=match)
    second = ingest_file(engine, copy_digest("digest-c.txt", tmp_path), at=FIXED_NOW, match=match)
    with store.reading(engine) as s:
        papers = s.exec(select(store.Paper)).all()
        queued = s.exec(select(store.Delivery)).all()
    wanted = {p.id for p in papers if naive_match("model", p.title) or naive_match("model", p.abstract)}
    assert {d.paper_id for d in queued} == wanted and len(queued) == len(wanted) > 10
    assert first.queued + second.queued == len(wanted) and second.new_papers == 52
    assert all(p.matched_at == FIXED_NOW for p in papers)
    assert counts(engine)["unmatched_papers"] == 0


def test_with_nobody_to_match_for_papers_are_stored_as_matched_unread(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store filled before anyone subscribes: no paper is read by the index, no subscriber
    row is read, and the papers are stored as matched (a later subscriber is backfilled)."""
    index = build_index(parse_settings(local_yaml(tmp_path), source="t.yaml", base=tmp_path))
    assert index.owners == 0

    def unexpected(*args: object) -> None:
        raise AssertionError("read with nobody to match for")

    monkeypatch.setattr(type(index), "match", unexpected)
    monkeypatch.setattr(store, "receiving", unexpected)
    report = ingest_file(
        engine,
        copy_digest("digest-a.txt", tmp_path),
        at=FIXED_NOW,
        match=Matcher(lambda: index, at=FIXED_NOW),
    )
    assert (report.status, report.new_papers, report.queued) == ("ingested", 39, 0)
    assert counts(engine)["unmatched_papers"] == 0


def test_a_file_whose_matching_fails_is_stored_not_at_all(engine: Engine, tmp_path: Path) -> None:
    """Storing and matching share the file's transaction: a failure leaves no paper that
    would never be matched, and the file is taken whole at the next poll."""
    path = copy_digest("digest-a.txt", tmp_path)

    def broken(session: object, papers: object) -> int:
        raise RuntimeError("the index is away")

    with pytest.raises(RuntimeError, match="the index is away"):
        ingest_file(engine, path, at=FIXED_NOW, match=broken)
    assert (counts(engine)["papers"], counts(engine)["files"]) == (0, 0)
    report = ingest_file(engine, path, at=FIXED_NOW, match=_alice_matcher(tmp_path, engine))
    assert (report.status, report.new_papers) == ("ingested", 39) and report.queued > 0
