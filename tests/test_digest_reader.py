"""A big digest is parsed by a second process: the same papers, problems and refusals as in
this process, a stopped reading stops the process, and a process that dies loses nothing."""

import fcntl
import pickle
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service import digest_reader
from service.digest import DigestError, DigestFile
from service.digest_reader import ReadingFailed, read
from service.ingest import ingest_file
from tests.helpers import FIXED_NOW, children_die, copy_digest
from tests.test_ingest import _alice_matcher, counts

MTIME = datetime(2026, 3, 15, 6, 0, tzinfo=UTC)


@pytest.fixture
def in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file, however small, is read by a second process."""
    monkeypatch.setattr(digest_reader, "PARALLEL_BYTES", 0)


def big_digest(path: Path, entries: int, *, dated: bool = True) -> Path:
    """``entries`` papers (several batches), a line that is not UTF-8 and a title with no abstract."""
    head = "Daily Papers\n\nMar 14\n\n" if dated else "Daily Papers\n\n"
    body = "".join(
        f"Paper number {i} about   models of\ttopic {i % 7}\n\n"
        + ("caf\xe9 " if i == 5 else "")
        + ("Words of the abstract. " * 12)
        + "\n\n"
        + ("A title left alone\n\n" if i == 1500 else "")
        for i in range(entries)
    )
    path.write_bytes((head + body).encode("utf-8").replace("café".encode(), b"caf\xe9"))
    return path


def read_all(path: Path, **kw: object) -> tuple[list[list[tuple[object, ...]]], DigestFile, str | None]:
    digest = DigestFile(str(path))
    with read(path, digest, mtime=MTIME) as r:
        batches = list(r.batches)
        assert (r.child is not None) == (digest_reader.PARALLEL_BYTES == 0)
    return batches, digest, r.sha256


@pytest.mark.parametrize("dated", [True, False])
def test_the_second_process_reads_what_this_one_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dated: bool
) -> None:
    path = big_digest(tmp_path / "big.txt", 2400, dated=dated)
    here, digest_here, sha_here = read_all(path)
    monkeypatch.setattr(digest_reader, "PARALLEL_BYTES", 0)
    there, digest_there, sha_there = read_all(path)
    assert [len(b) for b in there] == [500, 500, 500, 500, 400]  # BATCH papers at a time
    assert there == here and sha_there == sha_here and sha_here is not None
    assert digest_there == digest_here
    assert [p.line for p in digest_there.problems] == ([27, 6009] if dated else [25, 6007])
    assert {row[3] for batch in there for row in batch} == {
        MTIME.date().replace(month=3, day=14) if dated else MTIME.date()
    }


@pytest.mark.usefixtures("in_a_child")
def test_the_pipe_from_the_second_process_holds_a_whole_batch(tmp_path: Path) -> None:
    """So the child writes the next batch while this process stores one (on Linux, whose
    default pipe holds 64 KB)."""
    path = big_digest(tmp_path / "big.txt", 600)
    with read(path, DigestFile(str(path)), mtime=MTIME) as r:
        first = next(iter(r.batches))
        assert r.child is not None and r.child.stdout is not None
        holds = fcntl.fcntl(r.child.stdout.fileno(), fcntl.F_GETPIPE_SZ)
    assert len(first) == digest_reader.BATCH
    assert holds >= len(pickle.dumps(("papers", first), protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.usefixtures("in_a_child")
def test_a_refusal_in_the_second_process_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(
        "Daily Papers\n\n" + "\n\n".join(f"- item {i}\n\n{'x' * 40} and then some." for i in range(10))
    )
    digest = DigestFile(str(path))
    refused = r"notes\.txt: not a digest: 10 of its 10 title/abstract pairs"
    with pytest.raises(DigestError, match=refused), read(path, digest, mtime=MTIME) as r:
        list(r.batches)


@pytest.mark.usefixtures("in_a_child")
def test_a_big_file_is_stored_and_matched_through_the_second_process(engine: Engine, tmp_path: Path) -> None:
    path = copy_digest("digest-a.txt", tmp_path)
    report = ingest_file(engine, path, at=FIXED_NOW, match=_alice_matcher(tmp_path, engine))
    assert (report.status, report.entries, report.new_papers) == ("ingested", 39, 39) and report.queued > 0
    assert counts(engine)["papers"] == 39 and counts(engine)["unmatched_papers"] == 0
    assert ingest_file(engine, path, at=FIXED_NOW).status == "known"
    junk = tmp_path / "junk.txt"
    junk.write_text("Daily Papers\n\n" + "- an item\n\nnot a paper at all.\n\n" * 5)
    rejected = ingest_file(engine, junk, at=FIXED_NOW)
    assert rejected.status == "rejected" and "not a digest" in (rejected.error or "")


@pytest.mark.usefixtures("in_a_child")
def test_leaving_early_stops_the_second_process(tmp_path: Path) -> None:
    path = big_digest(tmp_path / "big.txt", 5000)
    with read(path, DigestFile(str(path)), mtime=MTIME) as r:
        next(r.batches)
        assert r.child is not None and r.child.poll() is None  # still parsing (or blocked on the pipe)
    assert r.child.returncode is not None


@pytest.mark.usefixtures("in_a_child")
def test_ctrl_c_and_sigterm_are_for_the_parent_to_handle(tmp_path: Path) -> None:
    """A stopping service finishes the file it is storing: the signals that reach the whole
    process group do not kill the parsing process under it."""
    path = big_digest(tmp_path / "big.txt", 3000)
    digest = DigestFile(str(path))
    with read(path, digest, mtime=MTIME) as r:
        first = next(r.batches)  # the child is past its start: its handlers are set
        assert r.child is not None
        r.child.send_signal(signal.SIGINT)
        r.child.send_signal(signal.SIGTERM)
        rest = list(r.batches)
    assert len(first) + sum(map(len, rest)) == 3000 and r.sha256 is not None
    assert r.child.returncode == 0


@pytest.mark.usefixtures("in_a_child")
def test_a_failed_match_stops_the_second_process_and_stores_nothing(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children: list[digest_reader.Reading] = []
    real = digest_reader.Reading.__init__

    def keep(self: digest_reader.Reading, *args: object) -> None:
        real(self, *args)  # type: ignore[arg-type]
        children.append(self)

    monkeypatch.setattr(digest_reader.Reading, "__init__", keep)
    path = big_digest(tmp_path / "big.txt", 3000)

    def broken(session: object, papers: object) -> int:
        raise RuntimeError("the index is away")

    with pytest.raises(RuntimeError, match="the index is away"):
        ingest_file(engine, path, at=FIXED_NOW, match=broken)
    assert children and all(c.child is not None and c.child.returncode is not None for c in children)
    assert (counts(engine)["papers"], counts(engine)["files"]) == (0, 0)


@pytest.mark.usefixtures("in_a_child")
def test_a_file_replaced_while_the_second_process_reads_it_is_left_for_later(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.ingest as ingest

    path = copy_digest("digest-b.txt", tmp_path)
    real = ingest.file_hash
    monkeypatch.setattr(ingest, "file_hash", lambda p: real(p)[::-1])
    assert ingest_file(engine, path, at=FIXED_NOW).status == "changed"
    assert counts(engine)["papers"] == 0


@pytest.mark.usefixtures("in_a_child")
def test_a_second_process_that_dies_loses_nothing(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a problem of the file: an error naming the file and what the process said, nothing
    stored, and the file taken whole once the process can run."""
    path = copy_digest("digest-a.txt", tmp_path / "inbox")
    children_die(monkeypatch, tmp_path, "MemoryError: out of memory")
    with pytest.raises(ReadingFailed) as failed:
        ingest_file(engine, path, at=FIXED_NOW)
    assert str(failed.value) == (
        f"{path}: the process parsing it stopped (exit status 3): MemoryError: out of memory"
    )
    assert (counts(engine)["papers"], counts(engine)["files"]) == (0, 0)
    monkeypatch.undo()
    assert ingest_file(engine, path, at=FIXED_NOW).new_papers == 39


def test_the_second_process_imports_no_store() -> None:
    """It starts in tens of milliseconds: the parser and the keys, not SQLAlchemy."""
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, service.digest_reader; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'sqlmodel', 'pydantic', 'jinja2', 'service.store')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "[]"
