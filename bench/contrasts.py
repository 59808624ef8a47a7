"""``bench/cycle.py``'s contrasts, each on fresh stores of the same workload:

- ``--workers N``: delivery by one ``paperboy worker --once`` against two at once, with how
  many of the machine's cores were busy meanwhile (its own processes, the database
  server's and everything else's: two workers held back by a lock leave cores idle);
- ``--tastes N``: the delivering ``run --once`` without ratings against the same with
  ``RATINGS`` answers from every reader (their tastes fitted by ``paperboy learn`` first,
  timed apart);
- ``--deliver``: the largest size's delivering ``run --once`` against ``bench/deliver.py``
  sending as many emails of the same size (``DELIVER_SIZE``), run before the sizes and after.

Run through ``bench/cycle.py``; the steps, the configuration and the sink are its own.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cycle import delivered, measure, write_config, write_digest
from deliver import scratch_database
from match import corpus, vocabulary

RATINGS = 10  # answers per reader in --tastes
# bench/deliver.py's emails of the size of the cycle's at 1,000 new papers (about 67 KiB)
DELIVER_SIZE = ["--max-papers", "24", "--keywords", "3"]


def rate_everyone(database: str, seed: int) -> int:
    """Every reader answers ``RATINGS`` of the papers their rules brought (more, less, in
    turn), as through the rating links; how many answers."""
    from sqlalchemy import create_engine, text

    rng = random.Random(seed)
    engine = create_engine(database)
    try:
        with engine.begin() as conn:
            papers: dict[int, list[int]] = {}
            for sid, pid in conn.execute(text("SELECT subscriber_id, paper_id FROM deliveries")):
                papers.setdefault(sid, []).append(pid)
            rows = [
                {"s": sid, "p": pid, "v": 1 if i % 2 == 0 else -1}
                for sid, ids in papers.items()
                for i, pid in enumerate(rng.sample(ids, min(RATINGS, len(ids))))
            ]
            conn.execute(
                text(
                    "INSERT INTO ratings (subscriber_id, paper_id, value, rated_at) "
                    "VALUES (:s, :p, :v, CURRENT_TIMESTAMP)"
                ),
                rows,
            )
    finally:
        engine.dispose()
    return len(rows)


def compare_tastes(subscribers: int, papers: list[tuple[str, str]], seed: int, server: str | None) -> bool:
    """The delivering ``run --once`` on two fresh stores of the same workload: without
    ratings, and with ``RATINGS`` answers from every reader, their tastes fitted first by
    ``paperboy learn`` (timed apart: a fit follows new answers, not every run)."""
    steps = []
    for tastes in (False, True):
        folder = Path(tempfile.mkdtemp(prefix=f"paperboy-tastes-{int(tastes)}-"))
        try:
            with scratch_database(server) as database:
                config = write_config(
                    folder, subscribers, random.Random(seed), vocabulary(corpus()), database
                )
                digest = folder / "digest.txt"
                write_digest(digest, papers)
                (folder / "inbox").mkdir()
                if measure("ingest", config, "ingest", str(digest)).code != 0:
                    return False
                if tastes:
                    answers = rate_everyone(database or f"sqlite:///{folder}/paperboy.db", seed)
                    steps.append((measure(f"learn ({answers:,} answers)", config, "learn"), 0))
                step = measure(f"run --once, {'with' if tastes else 'no'} tastes", config, "run", "--once")
                steps.append((step, delivered(folder, database)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\nlearned tastes, {subscribers:,} subscribers ({RATINGS} answers each):")
    for step, emails in steps:
        sent = f"{emails:,} emails" if emails else ""
        print(
            f"  {step.name:<30} {sent:>14}   wall {step.wall:7.2f} s   cpu {step.cpu:7.2f} s   "
            f"peak {step.peak_mb:6.1f} MB"
        )
    (plain, _), _, (ranked, _) = steps
    wall, cpu = ranked.wall / plain.wall - 1, ranked.cpu / plain.cpu - 1
    print(f"  ranking adds {wall:+.1%} wall, {cpu:+.1%} cpu to delivery")
    return all(step.code == 0 for step, _ in steps)


def compare_workers(subscribers: int, papers: list[tuple[str, str]], seed: int, server: str | None) -> bool:
    """Delivery by one ``paperboy worker --once``, then by two at once, each on a fresh store."""
    steps = []
    for processes in (1, 2):
        folder = Path(tempfile.mkdtemp(prefix=f"paperboy-workers-{processes}-"))
        try:
            with scratch_database(server) as database:
                terms = vocabulary(corpus())
                config = write_config(folder, subscribers, random.Random(seed), terms, database)
                digest = folder / "digest.txt"
                write_digest(digest, papers)
                (folder / "inbox").mkdir()
                if measure("ingest", config, "ingest", str(digest)).code != 0:
                    return False
                before = machine_cpu()
                step = measure(f"{processes} worker(s)", config, "worker", "--once", processes=processes)
                after = machine_cpu()
                emails = delivered(folder, database)
                steps.append((step, emails, _cores(before, after, step.wall)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\ndelivery by workers, {subscribers:,} subscribers (worker --once, started together):")
    for step, emails, cores in steps:
        print(
            f"  {step.name:<12} {emails:,} emails   wall {step.wall:7.2f} s   cpu {step.cpu:7.2f} s   "
            f"{emails / step.wall:7.0f} emails/s   peak {step.peak_mb:6.1f} MB   {cores}"
        )
    (one, _, _), (two, _, _) = steps
    print(f"  two against one: {one.wall / two.wall:.2f}x the speed, {two.cpu / one.cpu:.2f}x the CPU")
    return all(step.code == 0 for step, _, _ in steps) and steps[0][1] == steps[1][1]


def machine_cpu() -> tuple[float, float] | None:
    """Seconds all the machine's processors have spent busy, and stolen by the hypervisor, so
    far (Linux's ``/proc/stat``); None elsewhere."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _cores(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> str:
    if before is None or after is None:
        return ""
    busy, stolen = ((a - b) / wall for a, b in zip(after, before, strict=True))
    return f"machine: {busy:.2f} of {os.cpu_count()} cores busy, {stolen:.2f} stolen"


def deliver_alone(emails: int, server: str | None) -> float | None:
    """Seconds ``bench/deliver.py`` takes paperboy to send ``emails`` emails of ``DELIVER_SIZE``
    (its own sink and store); None when it failed."""
    here = Path(__file__).resolve().parent
    command = [sys.executable, str(here / "deliver.py"), "--emails", str(emails), *DELIVER_SIZE]
    command += ["--postgres", server] if server else []
    done = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"^paperboy: ([0-9.]+) s", done.stdout, re.MULTILINE)
    if not found:
        print(done.stdout + done.stderr, file=sys.stderr)
        return None
    return float(found.group(1))


def compare_deliver(emails: int, run_wall: float, before: float | None, after: float | None) -> bool:
    """The delivering run's wall time against bench/deliver.py's, before and after it."""
    print(f"\nthe delivering run against bench/deliver.py ({emails:,} emails, {' '.join(DELIVER_SIZE)}):")
    if before is None or after is None:
        print("  bench/deliver.py failed")
        return False
    low, high = sorted((run_wall / before, run_wall / after))
    print(f"  bench/deliver.py {before:.1f} s before the sizes, {after:.1f} s after")
    print(f"  run --once (deliver, feeds) {run_wall:.1f} s: {low:.2f} to {high:.2f}x the delivery alone")
    return True
