"""The inbox and ingestion: which digest files are ready, and taking one into the store.

A file in the inbox is taken once it has not changed for ``inbox_settle``
seconds (a download still being written is left for a later poll, and the
log says so). ``*.part``, ``*.tmp`` and dot-files are never taken.

A file is ingested once: its SHA-256 is recorded, and a file whose content
is known is skipped at the cost of reading it once. A file that is not a
digest (:class:`~service.digest.DigestError`) is rejected whole: its
transaction is rolled back, the rejection recorded, and the inbox moves it
to ``rejected/`` (:func:`move_aside`; never deleted). A file whose content
changed is ingested again; papers already known are not stored twice. One
transaction per file: a file is stored whole or not at all. If the file
changes while it is read, the transaction is rolled back and the file is
left for the next poll.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from . import digest_reader, store
from .digest import DigestError, DigestFile, Problem
from .log import event

log = logging.getLogger("paperboy.ingest")

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".swp")
REJECTED = "rejected"  # the inbox's folder for files that are not digests


@dataclass(slots=True)
class FileReport:
    path: Path
    status: str  # "ingested", "known", "rejected", "changed"
    entries: int = 0
    new_papers: int = 0
    queued: int = 0  # deliveries queued by matching the new papers as they were stored
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None


def scan_inbox(inbox: Path, *, settle: float, now: float) -> tuple[list[Path], list[Path]]:
    """The inbox's files as (ready, still settling), oldest first."""
    if not inbox.is_dir():
        raise FileNotFoundError(f"inbox {inbox} is not a folder; create it or fix 'inbox' in the config")
    found = []
    for path in inbox.iterdir():
        if path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # moved away while we looked
        if path.is_file():
            found.append((st.st_mtime, path.name, path, now - st.st_mtime >= settle))
    found.sort()
    return [p for *_, p, ok in found if ok], [p for *_, p, ok in found if not ok]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _FileChanged(Exception):
    pass


class _Rejected(Exception):
    pass


def _record(
    path: Path, sha: str, size: int, at: datetime, report: FileReport, digest: DigestFile
) -> store.IngestedFile:
    return store.IngestedFile(
        sha256=sha,
        path=str(path),
        size=size,
        ingested_at=at,
        entries=report.entries,
        new_papers=report.new_papers,
        problems=len(digest.problems),
        error=report.error,
    )


def move_aside(path: Path, folder: Path) -> Path:
    """Move a rejected file into ``folder`` (made if missing), never over another file; the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    path.rename(target)
    return target


Match = Callable[[Session, list[store.PaperText]], int]


def ingest_file(engine: Engine, path: Path, *, at: datetime, match: Match | None = None) -> FileReport:
    """Take one digest file into the store. Never raises for what the file holds.

    With ``match``, the new papers are matched as they are stored, in the file's
    transaction, and stored as matched: one pass, instead of reading every new paper
    back and rewriting its row to mark it matched (:func:`service.match.match_new`).
    ``match(session, papers)`` queues what they match and says how many deliveries.
    """
    started = time.monotonic()
    st = path.stat()
    mtime = datetime.fromtimestamp(st.st_mtime, tz=UTC)
    digest = DigestFile(str(path))
    report = FileReport(path, "ingested", problems=digest.problems)
    try:
        # A big file's parsing process starts first, and parses while the hash is taken.
        with digest_reader.read(path, digest, mtime=mtime) as read:
            sha = file_hash(path)
            with store.reading(engine) as session:
                if store.file_known(session=session, sha256=sha):
                    event(log, "ingest.known", level=logging.DEBUG, path=path)
                    return FileReport(path, "known")
            with store.transaction(engine) as session:
                try:
                    for rows in read.batches:
                        batch = list(map(store.NewPaper._make, rows))
                        report.entries += len(batch)
                        new = store.add_papers(
                            session=session, papers=batch, at=at, sha256=sha, matched=match is not None
                        )
                        report.new_papers += len(new)
                        if match is not None and new:
                            report.queued += match(session, new)
                except DigestError as exc:
                    raise _Rejected(str(exc)) from exc
                if read.sha256 != sha:
                    raise _FileChanged
                store.record_file(session=session, record=_record(path, sha, st.st_size, at, report, digest))
    except _FileChanged:
        event(
            log,
            "ingest.changed",
            level=logging.WARNING,
            path=path,
            hint="the file changed while it was read; it is taken at the next poll",
        )
        return FileReport(path, "changed")
    except _Rejected as exc:  # rolled back whole: nothing of it is stored
        report.status, report.error = "rejected", str(exc)
        report.entries = report.new_papers = report.queued = 0
        with store.transaction(engine) as session:
            store.record_file(session=session, record=_record(path, sha, st.st_size, at, report, digest))
    for problem in digest.problems:
        event(
            log,
            "digest.problem",
            level=logging.WARNING,
            at=f"{problem.file}:{problem.line}",
            file=problem.file,
            line=problem.line,
            problem=problem.message,
        )
    if report.error:
        event(log, "ingest.rejected", level=logging.ERROR, path=path, reason=report.error)
    else:
        event(
            log,
            "ingest.file",
            path=path,
            entries=report.entries,
            new=report.new_papers,
            deliveries=report.queued,
            problems=len(digest.problems),
            date=digest.date or "-",
            seconds=f"{time.monotonic() - started:.2f}",
        )
    return report
