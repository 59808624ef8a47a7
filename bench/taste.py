"""Does the learned ranking find what readers mean? Simulated readers over 30 days of digests.

    .venv/bin/python bench/taste.py [--readers 40] [--days 30] [--papers 80] [--seed 7]
                                    [--keep DIR]

Each simulated reader has a hidden interest, a query they "really" mean (``"language
models" AND persuasion``), and visible keywords that only approximate it (``"language
models"``). Each day a digest arrives, recombined from the sample digests of
``tests/fixtures``: ``--papers`` variants of real papers (most of a real abstract's
sentences, in order, and a clause of another paper; a title made unique), so that a
variant reads like its original. The whole paperboy cycle runs on it (ingest, match,
learn, deliver to a maildir), and the harness reads each reader's email back:

- *keyword order*: the rules' order of the same pending papers (what the email shows for a
  reader with no ratings: ``service.compose.best_first``);
- *learned order*: the email as sent (``max_papers: 10``), parsed from the maildir.

Both are scored with nDCG@10 against the hidden interest (relevance 2 when the hidden
term is in the title, 1 when only in the abstract, 0 when absent; the ideal order is
taken over all the papers the reader's rules brought that day). Then the reader rates
what they were shown, as a reader would, by the hidden interest: "more like this" on the
first relevant paper of the email they had not rated, "less like this" on the first
irrelevant one (at most two answers a day), recorded in the store as the rating links do.

Printed: nDCG@10 of both orders by the number of answers the reader had given before the
email, averaged over readers and days with at least one relevant paper. The targets:
learned at least 0.15 above keyword order after 10 answers; never below it with none.
"""

from __future__ import annotations

import argparse
import html as html_module
import itertools
import mailbox
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from match import corpus, make_papers  # noqa: E402  (the real papers of tests/fixtures)

from service import store  # noqa: E402
from service.compose import PaperCache, best_first  # noqa: E402
from service.cycle import App  # noqa: E402
from service.settings import load_settings  # noqa: E402
from service.text import folded_words, paper_key  # noqa: E402

SHOWN = 10  # max_papers: the email's papers, and the cut of nDCG
BUCKETS = ((0, 0), (1, 4), (5, 9), (10, 19), (20, 10_000))
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "we",
        "with",
        "our",
        "which",
        "can",
        "these",
        "their",
        "such",
        "not",
        "more",
        "than",
        "into",
        "also",
        "both",
        "new",
        "two",
        "based",
        "using",
        "via",
        "while",
        "show",
    ]
)
_PAPER = re.compile(
    r'<div class="paper"[^>]*>\s*<p class="title"[^>]*><a href="[^"]*"[^>]*>(.*?)</a></p>', re.S
)


def grams(text: str) -> set[str]:
    words = folded_words(text)
    out = {w for w in words if w not in STOP and len(w) > 3}
    out |= {f"{a} {b}" for a, b in itertools.pairwise(words) if a not in STOP and b not in STOP}
    return out


def readers_of(real: list[tuple[str, str]], n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(visible term, hidden term) pairs: a broad visible term in 12-40% of the papers, and a
    hidden one in 20-50% of the papers that hold the visible one (and not in most others)."""
    docs = [grams(f"{t} {a}") for t, a in real]
    df: dict[str, int] = defaultdict(int)
    for d in docs:
        for g in d:
            df[g] += 1
    broad = sorted(g for g, k in df.items() if 0.12 * len(docs) <= k <= 0.40 * len(docs))
    pairs = []
    for visible in broad:
        holding = [d for d in docs if visible in d]
        for hidden, k in df.items():
            inside = sum(hidden in d for d in holding)
            if (
                hidden != visible
                and hidden not in visible
                and 0.2 <= inside / len(holding) <= 0.5
                and k <= 1.5 * inside
            ):
                pairs.append((visible, hidden))
    rng.shuffle(pairs)
    return pairs[:n]


def variant(real: list[tuple[str, str]], rng: random.Random, tag: str) -> tuple[str, str]:
    """A new paper that reads like a real one: most of its sentences in order, a clause of
    another paper, a title made unique by ``tag``."""
    title, abstract = rng.choice(real)
    sentences = re.split(r"(?<=[.!?])\s+", abstract)
    kept = [s for s in sentences if rng.random() < 0.75] or sentences[:1]
    other = re.split(r"(?<=[.!?,;])\s+", rng.choice(real)[1])
    kept.insert(rng.randrange(len(kept) + 1), rng.choice(other).rstrip(",;") + ".")
    return f"{title} ({tag})", " ".join(kept)


def relevance(hidden: str, title: str, abstract: str) -> int:
    if hidden in grams(title):
        return 2
    return 1 if hidden in grams(abstract) else 0


def ndcg(order: list[int], pool: list[int]) -> float:
    """nDCG@SHOWN of the relevances ``order`` against the best of ``pool``."""

    def dcg(rels: list[int]) -> float:
        return sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(rels[:SHOWN]))

    ideal = dcg(sorted(pool, reverse=True))
    return dcg(order) / ideal if ideal else float("nan")


def write_config(folder: Path, pairs: list[tuple[str, str]]) -> Path:
    lines = [
        f"database: sqlite:///{folder}/paperboy.db",
        f"inbox: {folder}/inbox",
        "inbox_settle: 0s",
        f"email: {{maildir: {folder}/mail, max_papers: {SHOWN}}}",
        f"feeds: {{dir: {folder}/feeds}}",
        "http: {enabled: false}",
        "subscribers:",
    ]
    for i, (visible, _) in enumerate(pairs):
        lines += [f"  - email: reader{i:03d}@example.org", f'    keywords: ["{visible}"]']
    config = folder / "paperboy.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def emails(maildir: Path) -> dict[str, list[str]]:
    """The titles of each reader's email in the maildir, in order; the maildir emptied."""
    box = mailbox.Maildir(maildir, create=False)
    out = {}
    for key, message in list(box.items()):
        parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
        html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
        to = str(parsed["To"]).strip("<>").split("<")[-1].rstrip(">")
        out[to] = [paper_key(html_module.unescape(re.sub(r"<[^>]+>", "", t))) for t in _PAPER.findall(html)]
        box.remove(key)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=40)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--papers", type=int, default=80, help="papers in each day's digest")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--recombine",
        choices=("papers", "clauses"),
        default="papers",
        help="papers: variants of real papers; clauses: papers of clauses of many (bench/match.py's)",
    )
    parser.add_argument("--keep", type=Path, help="keep the store and maildir in this folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    real = corpus()
    pairs = readers_of(real, args.readers, rng)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="paperboy-taste-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inbox").mkdir(exist_ok=True)
    settings = load_settings(write_config(folder, pairs))
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    day = 0
    app = App(settings, progress=False, clock=lambda: start + timedelta(days=day))
    results: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(
        list
    )  # bucket: (keyword, learned)
    answers: dict[str, int] = defaultdict(int)
    rated: dict[str, set[int]] = defaultdict(set)
    t0 = time.monotonic()
    for day in range(args.days):
        if args.recombine == "clauses":
            papers = make_papers(real, args.papers, rng)
        else:
            papers = [variant(real, rng, f"d{day}n{i}") for i in range(args.papers)]
        when = (start + timedelta(days=day)).strftime("%b %d")
        body = "\n\n".join(f"{t}\n\n{a}" for t, a in papers)
        (folder / "inbox" / f"day{day:02d}.txt").write_text(f"Daily Papers\n\n{when}\n\n{body}\n")
        app.prepare_store()
        app.poll_inbox()
        app.match()
        keyword_order = {}
        with store.reading(app.engine) as session:
            ids = store.receiving(session=session)
            pending = store.outbox_rows(session=session, subscriber_ids=list(ids.values()))
            cache = PaperCache()
            for email, sid in ids.items():
                rows = pending.get(sid, [])
                seen = cache.seen(session, {r.paper_id for r in rows})
                texts = cache.texts(session, {r.paper_id for r in rows})
                keyword_order[email] = (
                    [texts[r.paper_id][2] for r in best_first(rows, SHOWN, seen)],  # keys
                    [texts[r.paper_id] for r in rows],
                )
        app.learn()
        app.deliver()
        sent = emails(settings.email.maildir)
        for i, (_, hidden) in enumerate(pairs):
            email = f"reader{i:03d}@example.org"
            if email not in sent:
                continue
            rel = {key: relevance(hidden, t, a) for t, a, key in keyword_order[email][1]}
            pool = list(rel.values())
            keyword = ndcg([rel[t] for t in keyword_order[email][0]], pool)
            learned = ndcg([rel.get(t, 0) for t in sent[email]], pool)
            if not math.isnan(keyword):
                bucket = next(b for b in BUCKETS if b[0] <= answers[email] <= b[1])
                results[bucket].append((keyword, learned))
            _rate(app, email, sent[email], rel, rated[email], answers)
    elapsed = time.monotonic() - t0
    print(
        f"{len(pairs)} readers, {args.days} days of {args.papers} papers, seed {args.seed} ({elapsed:.0f} s)"
    )
    print("\n| answers before the email | emails | keyword nDCG@10 | learned nDCG@10 | gain |")
    print("| --- | ---: | ---: | ---: | ---: |")
    ok = True
    for bucket in BUCKETS:
        got = results.get(bucket, [])
        if not got:
            continue
        keyword = statistics.fmean(k for k, _ in got)
        learned = statistics.fmean(v for _, v in got)
        name = (
            f"{bucket[0]}"
            if bucket[0] == bucket[1]
            else f"{bucket[0]}+"
            if bucket[1] > 1000
            else f"{bucket[0]}-{bucket[1]}"
        )
        print(f"| {name} | {len(got)} | {keyword:.3f} | {learned:.3f} | {learned - keyword:+.3f} |")
        if bucket[0] == 0 and abs(learned - keyword) > 1e-9:
            ok = False
        if bucket[0] >= 10 and learned - keyword < 0.15:
            ok = False
    print(f"\ntargets (no answers: equal; 10 and more: +0.15 or better): {'met' if ok else 'NOT met'}")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


def _rate(
    app: App, email: str, shown: list[str], rel: dict[str, int], rated: set[int], answers: dict[str, int]
) -> None:
    """The reader's answers to today's email: "more" on the first relevant paper not rated
    yet, "less" on the first irrelevant one."""
    with store.transaction(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=email)
        assert sub is not None and sub.id is not None
        done = {"more": False, "less": False}
        for key in shown:
            answer = "more" if rel.get(key, 0) > 0 else "less"
            if done[answer]:
                continue
            paper = store.find_paper(session=session, key=key)
            if paper is None or paper.id is None or paper.id in rated:
                continue
            store.rate(
                session=session,
                subscriber_id=sub.id,
                paper_id=paper.id,
                value=1 if answer == "more" else -1,
                at=app.clock(),
            )
            rated.add(paper.id)
            answers[email] += 1
            done[answer] = True


if __name__ == "__main__":
    raise SystemExit(main())
