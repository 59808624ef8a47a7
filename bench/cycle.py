"""The whole cycle as an operator runs it: each step its own `paperboy` process.

    .venv/bin/python bench/cycle.py [--sizes 1000,10000] [--papers 1000] [--seed 7] [--keep DIR]
                                    [--postgres URL] [--smtp] [--mirror all|shared]
                                    [--workers SUBSCRIBERS] [--tastes SUBSCRIBERS] [--deliver]

For each size (number of subscribers), in one run, on a fresh SQLite store and
a maildir:

1. ``paperboy ingest DIGEST``: parse, store and match ``--papers`` new papers;
2. ``paperboy run --once``: deliver every digest email to the maildir, write the feeds;
3. ``paperboy run --once`` again, with nothing new: the cost of every quiet poll;
4. ``paperboy status``
5. ``paperboy check``: the configuration of that many subscribers validated, its rules
   indexed, the templates loaded, the store's opt-outs read;
6. ``paperboy run`` (the service) polling with nothing new: the CPU of one quiet poll.

(3, 4 and 5 run five times each; the run of median CPU is printed).

With ``--postgres URL`` the store is a fresh schema on that server (dropped
afterwards) instead of a SQLite file. With ``--smtp`` every configuration sends to
an aiosmtpd sink in another process (``bench/deliver.py``'s, 4 connections)
instead of writing a maildir: the delivering run then compares with
``bench/deliver.py`` for the same number of emails; ``--deliver`` runs it, before
the sizes and after, with as many emails as the largest size, of the size of the
cycle's (``--max-papers 24 --keywords 3``), and prints the ratio. ``--mirror shared`` sets
``feeds.mirror: shared``: no reader's feed file is written (they are served from
the store). With ``--workers N`` it then compares
delivery by one ``paperboy worker --once`` against two at once, each on its
own fresh store of N subscribers (ingested first): how much a second worker
adds, on this machine's cores, with a maildir as the sink. With ``--tastes N`` it
compares the delivering ``run --once`` at N subscribers without ratings against the
same with 10 answers from every reader (their tastes fitted by ``paperboy learn``,
timed apart): what ranking by learned tastes adds to delivery.

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

sys.path.insert(0, str(ROOT))

sys.modules.setdefault("cycle", sys.modules[__name__])  # bench/contrasts.py imports this very module

from deliver import free_port, scratch_database, start_sink  # noqa: E402  (a PostgreSQL schema; the SMTP sink)
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


SINK: int | None = None  # --smtp: the port of the sink every configuration sends to (else a maildir)
MIRROR = "all"  # --mirror: feeds.mirror of every configuration


def write_config(
    folder: Path,
    subscribers: int,
    rng: random.Random,
    terms: tuple[list[str], ...],
    database: str | None = None,
) -> Path:
    words, phrases, stems = terms

    def term() -> str:
        r = rng.random()
        return rng.choice(words) if r < 0.6 else rng.choice(phrases) if r < 0.85 else rng.choice(stems)

    topics = [f"topic-{i}" for i in range(20)]
    lines = [
        f'database: "{database}"' if database else f"database: sqlite:///{folder}/paperboy.db",
        f"inbox: {folder}/inbox",
        "inbox_settle: 0s",
        f"email: {{maildir: {folder}/mail}}"
        if SINK is None
        else f"email: {{from: 'paperboy <papers@example.org>', transport: smtp, "
        f"smtp: {{host: 127.0.0.1, port: {SINK}, concurrency: 4}}}}",
        f"feeds: {{dir: {folder}/feeds, mirror: {MIRROR}}}",
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


def measure(name: str, config: Path, *args: str, processes: int = 1) -> Step:
    """``paperboy ARGS`` as ``processes`` processes started together: wall seconds until the
    last ends, CPU seconds of all, the largest peak memory, the worst exit code."""
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "--config", str(config), "-q", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    cpu, peak, code = 0.0, 0.0, 0
    for proc in procs:
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
        cpu += usage.ru_utime + usage.ru_stime
        peak = max(peak, usage.ru_maxrss / 1024)
        code = code or proc.returncode
    return Step(name, time.monotonic() - t0, cpu, peak, code)


def delivered(folder: Path, database: str | None) -> int:
    """The emails delivered: files in the maildir, or (``--smtp``) subscribers sent to."""
    if SINK is None:
        mail = folder / "mail" / "new"
        return len(list(mail.iterdir())) if mail.is_dir() else 0
    from sqlalchemy import create_engine, text

    engine = create_engine(database or f"sqlite:///{folder}/paperboy.db")
    try:
        with engine.connect() as conn:
            sql = "SELECT count(DISTINCT subscriber_id) FROM deliveries WHERE state = 'sent'"
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


DELIVERING = "run --once (deliver, feeds)"
REPEAT = 5  # runs of each short step: its median is printed (one run of a second is noise here)


def median_of(runs: int, name: str, config: Path, *args: str) -> Step:
    """``measure`` ``runs`` times: the run of median CPU."""
    steps = sorted((measure(name, config, *args) for _ in range(runs)), key=lambda step: step.cpu)
    return steps[len(steps) // 2]


def one_size(
    subscribers: int, papers: list[tuple[str, str]], seed: int, folder: Path, database: str | None = None
) -> list[Step]:
    rng = random.Random(seed)
    real = corpus()
    config = write_config(folder, subscribers, rng, vocabulary(real), database)
    digest = folder / "digest.txt"
    write_digest(digest, papers)
    (folder / "inbox").mkdir()
    return [
        measure("ingest + match", config, "ingest", str(digest)),
        measure(DELIVERING, config, "run", "--once"),
        median_of(REPEAT, "run --once, nothing new", config, "run", "--once"),
        median_of(REPEAT, "status", config, "status"),
        median_of(REPEAT, "check", config, "check"),
        quiet_polls(config, database or f"sqlite:///{folder}/paperboy.db"),
    ]


POLLS = 50  # quiet polls measured in the running service
QUIET_POLL = "run: one quiet poll (service)"


def quiet_polls(config: Path, database: str) -> Step:
    """``paperboy run`` (the service) polling every second with nothing new: the CPU of one
    poll, from the process's own accounting across ``POLLS`` polls after the first. The
    polls are counted in the store (``job_runs``), so nothing here waits on the clock alone."""
    from sqlalchemy import create_engine, text

    service = config.with_name("service.yaml")
    service.write_text(config.read_text() + "schedule: {poll: 1s, deliver: '0 0 1 1 *'}\n")
    engine = create_engine(database)

    def polls() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM job_runs WHERE job = 'poll'")).scalar_one())

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_polls(n: int) -> None:
        deadline = time.monotonic() + 600
        while polls() < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("paperboy run did not poll")
            time.sleep(0.05)

    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(service), "-q", "run"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        start = polls()
        wait_polls(start + 1)  # the first poll (start-up, configuration, store) is done
        c0, n0, t0 = cpu(proc.pid), polls(), time.monotonic()
        wait_polls(n0 + POLLS)
        c1, n1, t1 = cpu(proc.pid), polls(), time.monotonic()
        peak = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
        engine.dispose()
    return Step(QUIET_POLL, (t1 - t0) / (n1 - n0), (c1 - c0) / (n1 - n0), peak, code)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts, comma-separated")
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep each size's store, config and mail under this folder")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server for the stores (new schemas)")
    parser.add_argument("--workers", type=int, metavar="N", help="then 1 worker against 2, at N subscribers")
    parser.add_argument(
        "--smtp",
        action="store_true",
        help="deliver to an aiosmtpd sink on 127.0.0.1 (bench/deliver.py's, 4 connections), not a maildir",
    )
    parser.add_argument(
        "--tastes", type=int, metavar="N", help="then delivery with learned tastes against without, at N"
    )
    parser.add_argument(
        "--mirror", choices=("all", "shared"), default="all", help="feeds.mirror (shared: no reader's file)"
    )
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="also bench/deliver.py with as many emails as the largest size, before the sizes and after",
    )
    args = parser.parse_args()
    if args.deliver and not args.smtp:
        parser.error("--deliver compares with bench/deliver.py's SMTP sink: add --smtp")
    global MIRROR
    MIRROR = args.mirror
    if args.smtp:
        global SINK
        SINK = free_port()
        sink = start_sink(SINK)
        try:
            return measured(args)
        finally:
            sink.terminate()
            sink.wait(timeout=30)
    return measured(args)


def measured(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    papers = make_papers(corpus(), args.papers, random.Random(args.seed))
    python = platform.python_version()
    print(f"machine:  {platform.machine()}, {os.cpu_count()} cores, Python {python}, {platform.system()}")
    print(
        f"workload: {args.papers:,} new papers; subscribers with 4-6 terms, "
        "a query for 1 in 20, a topic for 1 in 10"
    )
    print(f"store:    {'PostgreSQL' if args.postgres else 'SQLite'}")
    print(f"sink:     {f'aiosmtpd Sink on 127.0.0.1:{SINK}, 4 connections' if SINK else 'a maildir'}")
    print(f"feeds:    feeds.mirror: {MIRROR}")
    if args.deliver:
        from contrasts import deliver_alone

        alone_before = deliver_alone(sizes[-1], args.postgres)
    results: dict[int, list[Step]] = {}
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"paperboy-cycle-{size}-"))
        try:
            with scratch_database(args.postgres) as database:
                results[size] = one_size(size, papers, args.seed, folder, database)
                emails = delivered(folder, database)  # (--smtp: counted in the store, before it goes)
            print(f"\n{size:,} subscribers ({emails:,} emails delivered):")
            for step in results[size]:
                flag = "" if step.code == 0 else f"  EXIT {step.code}"
                if step.name == QUIET_POLL:  # milliseconds: a poll costs a few
                    print(
                        f"  {step.name:<30} cpu {step.cpu * 1000:7.1f} ms per poll   "
                        f"peak {step.peak_mb:7.1f} MB{flag}"
                    )
                    continue
                print(
                    f"  {step.name:<30} wall {step.wall:7.2f} s   cpu {step.cpu:7.2f} s   "
                    f"peak {step.peak_mb:7.1f} MB{flag}"
                )
        finally:
            if args.keep:
                shutil.move(str(folder), args.keep / folder.name)
            else:
                shutil.rmtree(folder, ignore_errors=True)
    large = sizes[-1]
    for small in sizes[:-1]:  # the largest size against each smaller one
        print(f"\ngrowth, {large:,} against {small:,} subscribers ({large / small:g}x):")
        for a, b in zip(results[small], results[large], strict=True):
            print(
                f"  {a.name:<30} wall {b.wall / a.wall:6.2f}x   cpu {b.cpu / a.cpu:6.2f}x   "
                f"peak {b.peak_mb / a.peak_mb:6.2f}x"
            )
    ok = all(s.code == 0 for steps in results.values() for s in steps)
    if args.deliver:
        from contrasts import compare_deliver, deliver_alone

        run = next(s for s in results[large] if s.name == DELIVERING)
        ok = compare_deliver(large, run.wall, alone_before, deliver_alone(large, args.postgres)) and ok
    if args.workers or args.tastes:
        from contrasts import compare_tastes, compare_workers  # they use this module's steps

        if args.workers:
            ok = compare_workers(args.workers, papers, args.seed, args.postgres) and ok
        if args.tastes:
            ok = compare_tastes(args.tastes, papers, args.seed, args.postgres) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
