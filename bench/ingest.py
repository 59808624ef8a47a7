"""Ingest benchmark: papers a second, against the floor, and memory that stays flat.

    .venv/bin/python bench/ingest.py [--sizes 5 50]

Builds digest files of the given sizes in MB from the sample digests (every
real entry repeated with a numbered title, so each is a new paper), then
ingests each with ``paperboy ingest`` in a fresh process and a fresh SQLite
store (parse, store, match: no subscribers; a file of 16 MB or more is parsed
by a second process while the first stores, see ``service/digest_reader.py``), and
prints the time, the papers stored and the peak resident memory of the
process and of its parsing process. Two times: the whole process (start-up,
the new store's migrations, the file), and the file alone, as its
``ingest.file`` log line gives it (``seconds=``: hash, parse, store and match
in its one transaction): what each file costs a running service. The parser
streams the file and the store takes papers in batches, so peak memory should
not grow with the file.

In the same run, the floors: the bare bulk insert of the same rows (Python's
sqlite3, one ``executemany`` in one transaction, into the same migrated
schema, WAL and ``synchronous=NORMAL`` as paperboy sets them), the same with
the papers' links to their file (``paper_files``, one ``INSERT .. SELECT``:
ingest stores those rows too), and the parse
alone (``service.digest.parse`` over the file, keys made, nothing stored).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.digest import parse_bytes  # noqa: E402

CHILD = (
    "import resource, sys; from service.cli import main; rc = main(sys.argv[1:]);"
    " print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def build(path: Path, megabytes: int) -> int:
    entries = []
    for sample in sorted((ROOT / "tests" / "fixtures").glob("digest-*.txt")):
        entries += parse_bytes(sample.read_bytes(), name=sample.name, mtime=datetime.now(UTC))[1]
    target = megabytes * 1024 * 1024
    written = count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("Mar 14\n\n")
        while written < target:
            for e in entries:
                block = f"{e.title} (variant {count})\n\n{e.abstract}\n\n"
                out.write(block)
                written += len(block.encode())
                count += 1
                if written >= target:
                    break
    os.utime(path, (0, 0))
    return count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 50])
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            digest = folder / f"digest-{size}mb.txt"
            entries = build(digest, size)
            config = folder / "paperboy.yaml"
            config.write_text(f"database: sqlite:///{folder}/db.sqlite\ninbox: {folder}/inbox\n")
            t0 = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", CHILD, "--config", str(config), "ingest", str(digest)],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            took = time.perf_counter() - t0
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            lines = result.stderr.splitlines()
            peak = next(int(line.split()[1]) for line in lines if line.startswith("MAXRSS"))
            logged = next(line for line in lines if " ingest.file " in line)
            alone = float(re.search(r" seconds=([0-9.]+)", logged).group(1))  # type: ignore[union-attr]
            print(
                f"{size:>4} MB digest, {entries:,} entries: paperboy ingest {took:.2f} s as a process"
                f" ({entries / took:,.0f} papers/s), the file alone {alone:.2f} s ({entries / alone:,.0f}"
                f" papers/s); peak RSS {peak / 1024:.0f} MB, the parsing process's {parser_peak(digest)} MB"
                f"  [{result.stdout.strip()}]"
            )
            parsed, rows = parse_only(digest)
            bare = bare_insert(folder / "db.sqlite", rows)
            linked = bare_insert(folder / "db.sqlite", rows, links=True)
            print(
                f"      floors: parse alone {parsed:.2f} s ({entries / parsed:,.0f} papers/s), "
                f"bare bulk insert {bare:.2f} s ({entries / bare:,.0f} rows/s), with the file links"
                f" {linked:.2f} s; the file alone is {alone / bare:.1f}x the insert ({alone / linked:.1f}x"
                f" with the links), {alone / (parsed + bare):.1f}x parse + insert"
            )
    return 0


def parser_peak(path: Path) -> str:
    """The peak memory of ``paperboy ingest``'s parsing process (its child) on ``path``, in MB,
    run alone from a small launcher (a child's peak counts the memory of the process it was
    forked from, so it cannot be read from paperboy's own process); "-" below its size limit."""
    from service import digest_reader

    if path.stat().st_size < digest_reader.PARALLEL_BYTES:
        return "-"
    launcher = (
        "import resource, subprocess, sys; subprocess.run([sys.executable, '-m', 'service.digest_reader',"
        " sys.argv[1], 'x', '2026-03-15T00:00:00+00:00'], stdout=subprocess.DEVNULL, check=True);"
        " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", launcher, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    return f"{int(out.stdout) / 1024:.0f}"


def parse_only(path: Path) -> tuple[float, list[tuple[object, ...]]]:
    """Seconds to parse the file and key its papers; the rows paperboy would store."""
    from service.digest import DigestFile, parse
    from service.text import paper_key

    t0 = time.perf_counter()
    with path.open("rb") as f:
        entries = list(parse(f, DigestFile(path.name), mtime=datetime.now(UTC)))
    rows = [(paper_key(e.title), e.title, e.abstract, e.date, path.name, e.line) for e in entries]
    took = time.perf_counter() - t0
    at = datetime.now(UTC).isoformat(sep=" ")
    return took, [(*row, at) for row in rows]


def bare_insert(database: Path, rows: list[tuple[object, ...]], *, links: bool = False) -> float:
    """Seconds to insert ``rows`` into an empty copy of the store's papers table, in bulk; with
    ``links``, also each paper's link to its file (``paper_files``, as ingest stores it), by
    one INSERT .. SELECT."""
    con = sqlite3.connect(database, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("DELETE FROM paper_files")
        con.execute("DELETE FROM papers")
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t0 = time.perf_counter()
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO papers (key, title, abstract, digest_date, source, line, first_seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(k, t, a, d.isoformat() if d else None, s, n, at) for k, t, a, d, s, n, at in rows],  # type: ignore[union-attr]
        )
        if links:
            con.execute(
                "INSERT INTO paper_files (paper_id, file_sha256) SELECT id, ? FROM papers", ("0" * 64,)
            )
        con.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        con.close()


if __name__ == "__main__":
    raise SystemExit(main())
