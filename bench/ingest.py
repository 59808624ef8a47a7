"""Ingest benchmark: memory stays flat as digest files grow.

    .venv/bin/python bench/ingest.py [--sizes 5 50]

Builds digest files of the given sizes in MB from the sample digests (every
real entry repeated with a numbered title, so each is a new paper), then
ingests each with ``paperboy ingest`` in a fresh process and a fresh SQLite
store, and prints the time, the papers stored and the process's peak
resident memory. The parser streams the file and the store takes papers in
batches, so peak memory should not grow with the file.
"""

from __future__ import annotations

import argparse
import os
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
                [sys.executable, "-c", CHILD, "--config", str(config), "-q", "ingest", str(digest)],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            took = time.perf_counter() - t0
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            peak = next(
                int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("MAXRSS")
            )
            print(
                f"{size:>4} MB digest, {entries:,} entries: ingested in {took:.1f} s"
                f" ({entries / took:,.0f} papers/s), peak RSS {peak / 1024:.0f} MB  [{result.stdout.strip()}]"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
