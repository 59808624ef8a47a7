"""The whole cycle as an operator runs it: each step its own `paperboy` process.

    .venv/bin/python bench/cycle.py [--sizes 1000,10000] [--papers 1000] [--seed 7] [--keep DIR]

For each size (number of subscribers), in one run, on a fresh SQLite store and
a maildir:

1. ``paperboy ingest DIGEST``: parse, store and match ``--papers`` new papers;
2. ``paperboy run --once``: deliver every digest email to the maildir, write the feeds;
3. ``paperboy run --once`` again, with nothing new: the cost of every quiet poll;
4. ``paperboy status``.

Each step is timed from outside as a whole process: wall seconds, CPU seconds
(user + system, from the kernel's accounting of the child, ``os.wait4``) and
peak resident memory. Then the ratio of each figure between the sizes: a cost
that grows with the number of subscribers shows there.

The workload is synthetic, from the sample digests in ``tests/fixtures`` (as
``bench/match.py`` builds it): papers recombined from real titles and abstract
clauses, written as one digest file; subscribers with 4 to 6 specific terms
each (words, title phrases, prefixes), a query for one in twenty, one of 20
topics followed by one in ten.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from match import corpus, make_papers, vocabulary  # noqa: E402  (bench/match.py's workload)


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    wall: float
    cpu: float
    peak_mb: float
    code: int


def quoted(term: str) -> str:
    return f'"{term}"' if " " in term else term


def write_config(folder: Path, subscribers: int, rng: random.Random, terms: tuple[list[str], ...]) -> Path:
    words, phrases, stems = terms

    def term() -> str:
        r = rng.random()
        return rng.choice(words) if r < 0.6 else rng.choice(phrases) if r < 0.85 else rng.choice(stems)

    topics = [f"topic-{i}" for i in range(20)]
    lines = [
        f"database: sqlite:///{folder}/paperboy.db",
        f"inbox: {folder}/inbox",
        "inbox_settle: 0s",
        f"email: {{maildir: {folder}/mail}}",
        f"feeds: {{dir: {folder}/feeds}}",
        "http: {enabled: false}",
        "topics:",
    ]
    for name in topics:
        lines.append(f"  {name}:")
        lines.append(
            f"    query: '(\"{rng.choice(phrases)}\" OR {rng.choice(words)} OR {rng.choice(words)})'"
        )
    lines.append("subscribers:")
    for i in range(subscribers):
        lines.append(f"  - email: reader{i:05d}@example.org")
        keywords = ", ".join(f'"{term()}"' for _ in range(rng.randint(4, 6)))
        lines.append(f"    keywords: [{keywords}]")
        if i % 20 == 0:
            lines.append(f"    query: '{quoted(term())} AND NOT {quoted(term())}'")
        if i % 10 == 3:
            lines.append(f"    topics: [{rng.choice(topics)}]")
    config = folder / "paperboy.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def write_digest(path: Path, papers: list[tuple[str, str]]) -> None:
    body = "\n\n".join(f"{title}\n\n{abstract}" for title, abstract in papers)
    path.write_text(f"Daily Papers\n\nMar 14\n\n{body}\n")


def measure(name: str, config: Path, *args: str) -> Step:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(config), "-q", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    return Step(name, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def one_size(subscribers: int, papers: list[tuple[str, str]], seed: int, folder: Path) -> list[Step]:
    rng = random.Random(seed)
    real = corpus()
    config = write_config(folder, subscribers, rng, vocabulary(real))
    digest = folder / "digest.txt"
    write_digest(digest, papers)
    (folder / "inbox").mkdir()
    return [
        measure("ingest + match", config, "ingest", str(digest)),
        measure("run --once (deliver, feeds)", config, "run", "--once"),
        measure("run --once, nothing new", config, "run", "--once"),
        measure("status", config, "status"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts, comma-separated")
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep each size's store, config and mail under this folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    papers = make_papers(corpus(), args.papers, random.Random(args.seed))
    python = platform.python_version()
    print(f"machine:  {platform.machine()}, {os.cpu_count()} cores, Python {python}, {platform.system()}")
    print(
        f"workload: {args.papers:,} new papers; subscribers with 4-6 terms, "
        "a query for 1 in 20, a topic for 1 in 10"
    )
    results: dict[int, list[Step]] = {}
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"paperboy-cycle-{size}-"))
        try:
            results[size] = one_size(size, papers, args.seed, folder)
            emails = (
                len(list((folder / "mail" / "new").iterdir())) if (folder / "mail" / "new").is_dir() else 0
            )
            print(f"\n{size:,} subscribers ({emails:,} emails delivered):")
            for step in results[size]:
                flag = "" if step.code == 0 else f"  EXIT {step.code}"
                print(
                    f"  {step.name:<30} wall {step.wall:7.2f} s   cpu {step.cpu:7.2f} s   "
                    f"peak {step.peak_mb:7.1f} MB{flag}"
                )
        finally:
            if args.keep:
                shutil.move(str(folder), args.keep / folder.name)
            else:
                shutil.rmtree(folder, ignore_errors=True)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"\ngrowth, {large:,} against {small:,} subscribers ({large / small:g}x):")
        for a, b in zip(results[small], results[large], strict=True):
            print(
                f"  {a.name:<30} wall {b.wall / a.wall:6.2f}x   cpu {b.cpu / a.cpu:6.2f}x   "
                f"peak {b.peak_mb / a.peak_mb:6.2f}x"
            )
    return 0 if all(s.code == 0 for steps in results.values() for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
