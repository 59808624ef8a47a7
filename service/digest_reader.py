"""Reading a digest file for ingest: in this process, or a big one in a second process.

Parsing a big digest costs as much CPU as storing its papers, and in one
process the two add up. So a file of ``PARALLEL_BYTES`` or more is read by a
child process (``python -m service.digest_reader PATH NAME MTIME``): it
hashes and parses the file (:mod:`service.digest`, pure) and writes the
papers back over a pipe a batch at a time, while this process makes their
keys and stores the batch before (parsing is the slower of the two, so the
keys are made here). The pipe holds one batch, so the child never runs
further ahead than that: memory stays flat. Smaller files (every real digest
is a few hundred KB) are parsed here: below about 10 MB, starting an
interpreter and passing the rows cost what the overlap saves (timed on 5, 10
and 20 MB files).

Either way :func:`read` yields the same batches of rows, ``(key, title,
abstract, date, source, line)``, fills the same
:class:`~service.digest.DigestFile` (date line, problems), raises
:class:`~service.digest.DigestError` for a file that is not a digest, and
gives the SHA-256 of the bytes it read, which the caller holds against the
hash it took first to tell a file that changed while it was read. The child
imports neither the store nor SQLAlchemy: it starts in about 40 ms.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, BinaryIO

from . import children
from .digest import DigestError, DigestFile, Entry, Problem, parse
from .text import paper_key

PARALLEL_BYTES = 16 << 20  # a file this big is parsed by a second process
BATCH = 500  # papers per batch (per INSERT, per message from the child): about 0.9 MB of text
PIPE_BYTES = 1 << 20  # the pipe from the child holds a batch (Linux's default, 64 KB, a fourteenth)

Row = tuple[str, str, str, date, str, int]  # key, title, abstract, digest date, file name, line
Parsed = tuple[str, str, date, str, int]  # a row before its key: title, abstract, date, file, line


class ReadingFailed(Exception):
    """The parsing process died (not a problem of the file: the file is left for a later poll)."""


class _HashingReader:
    """Reads a binary file and hashes every byte it hands out (a rewind starts over)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data

    def seek(self, pos: int) -> int:
        if pos != 0:
            raise ValueError("only rewinding is supported")
        self.sha = hashlib.sha256()
        return self.raw.seek(0)


class Reading:
    """A digest file being read (see :func:`read`): ``batches`` yields its papers, and
    ``sha256`` is the hash of the bytes read, set once the last batch has been taken."""

    def __init__(self, batches: Iterator[list[Row]], child: subprocess.Popen[bytes] | None = None) -> None:
        self.batches = batches
        self.sha256: str | None = None
        self.child = child  # the parsing process, for a big file
        self.said_all = False  # the child sent its last message (the end, or why it refused the file)


@contextlib.contextmanager
def read(path: Path, digest: DigestFile, *, mtime: datetime) -> Iterator[Reading]:
    """Read the digest at ``path`` here or, for a big file, in a second process started at
    once (see the module's text); leaving the block stops that process if it still runs."""
    if path.stat().st_size < PARALLEL_BYTES:
        reading = Reading(iter(()))
        reading.batches = batches = _here(path, digest, reading, mtime=mtime)
        try:
            yield reading
        finally:
            batches.close()  # the file, at once when the caller stopped early
        return
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            [*children.command("service.digest_reader"), str(path), digest.name, mtime.isoformat()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=children.environment(),
        )
        assert child.stdout is not None
        _widen(child.stdout)
        reading = Reading(iter(()), child)
        try:
            reading.batches = _from_child(child, errors, path, digest, reading)
            yield reading
        finally:
            assert child.stdout is not None
            child.stdout.close()
            if not reading.said_all and child.poll() is None:
                child.kill()  # the caller stopped early: a known file, a failed match
            child.wait()


def _widen(pipe: IO[bytes]) -> None:
    """Let the pipe hold a whole batch, so that the child writes the next one while this
    process stores the one before, instead of a pipeful at a time as this process reads it.
    Linux only; elsewhere, or past the system's limit (``/proc/sys/fs/pipe-max-size``, 1 MB
    unless raised), the pipe stays as it is."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), setsize, PIPE_BYTES)


def _here(path: Path, digest: DigestFile, reading: Reading, *, mtime: datetime) -> Generator[list[Row]]:
    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        parsed = parse(reader, digest, mtime=mtime)  # type: ignore[arg-type]
        yield from map(_keyed, _batches(parsed, path.name, mtime.date()))
        reading.sha256 = reader.sha.hexdigest()


def _batches(entries: Iterator[Entry], source: str, day: date) -> Iterator[list[Parsed]]:
    """The entries as rows without their keys, ``BATCH`` at a time; an entry without a date (a
    digest without a date line) is of the day of its file."""
    batch: list[Parsed] = []
    for e in entries:
        batch.append((e.title, e.abstract, e.date or day, source, e.line))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _keyed(batch: list[Parsed]) -> list[Row]:
    """The rows with each paper's key first. For a big file this process makes them as it
    takes each batch, not the parsing one: parsing is the slower of the two, and the keys
    are a tenth of it."""
    return [
        (paper_key(title), title, abstract, day, source, line) for title, abstract, day, source, line in batch
    ]


# ------------------------------------------------------------------ the second process
#
# The child writes pickles to its stdout: ("papers", [row, ...]) for each batch, then one of
# ("end", sha256, date, problems) or ("rejected", message, problems); problems as tuples.


def _from_child(
    child: subprocess.Popen[bytes], errors: IO[bytes], path: Path, digest: DigestFile, reading: Reading
) -> Iterator[list[Row]]:
    assert child.stdout is not None
    while True:
        try:
            kind, *body = pickle.load(child.stdout)
        except EOFError:
            child.wait()
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            raise ReadingFailed(
                f"{path}: the process parsing it stopped (exit status {child.returncode})"
                + (f": {said[-1]}" if said else "")
            ) from None
        if kind == "papers":
            yield _keyed(body[0])
            continue
        reading.said_all = True
        digest.problems.extend(Problem(*p) for p in body[-1])
        if kind == "rejected":
            raise DigestError(body[0])
        reading.sha256, digest.date = body[0], body[1]
        return


def _child(argv: list[str]) -> int:
    children.leave_signals_to_parent()  # a stopping service finishes the file it is storing
    path, name, mtime = Path(argv[0]), argv[1], datetime.fromisoformat(argv[2])
    out = sys.stdout.buffer
    digest = DigestFile(name)

    def send(*message: object) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)

    with path.open("rb") as raw:
        reader = _HashingReader(raw)
        try:
            for batch in _batches(parse(reader, digest, mtime=mtime), path.name, mtime.date()):  # type: ignore[arg-type]
                send("papers", batch)
        except DigestError as exc:
            send("rejected", str(exc), [(p.file, p.line, p.message) for p in digest.problems])
        else:
            problems = [(p.file, p.line, p.message) for p in digest.problems]
            send("end", reader.sha.hexdigest(), digest.date, problems)
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
