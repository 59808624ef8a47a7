"""End to end, as a user runs it: digest files in the inbox, `paperboy run --once`,
a real SMTP server receiving the digests, feeds read back by feedparser."""

import json
import os
import re
import time
from pathlib import Path

import feedparser
from sqlalchemy import event

from tests.helpers import FIXTURES, Sink, copy_digest, free_port, local_config, run_cli, serving, write_config
from tests.oracle import email_papers, fold, naive_match

SUBSCRIBERS = {
    "alice@example.org": (["instruction-following", "reward model"], ["survey"]),
    "bob@example.org": (["TÜLU", "gaussian"], []),
    "carol@example.org": (["LLM", "language model"], ["multimodal", "instruction"]),
    "dave@example.org": (["quantum chromodynamics"], []),
}


def config_for(tmp_path: Path, port: int, database_url: str, *, retry_after: str = "5m") -> Path:
    subs = "".join(
        f"  - email: {email}\n    name: {email.split('@')[0].title()}\n    keywords: {json.dumps(kw)}\n"
        f"    exclude: {json.dumps(ex)}\n"
        for email, (kw, ex) in SUBSCRIBERS.items()
    )
    # only the keys of the interface: no schedule, no timezone
    return write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: "{database_url}"
inbox: {tmp_path}/inbox
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp:
    host: 127.0.0.1
    port: {port}
  maildir: {tmp_path}/mail
  retry_after: {retry_after}
feeds:
  dir: {tmp_path}/feeds
  base_url: https://papers.example.org/feeds/
subscribers:
{subs}""",
    )


def expected(digests: list[str]) -> dict[str, set[str]]:
    """Which titles each subscriber should get from these digest files (first spelling wins)."""
    seen: dict[str, tuple[str, str]] = {}
    for name in digests:
        text = (FIXTURES / name).read_text()
        paras = [p for p in text.split("\n\n") if p.strip()]
        start = next(i for i, p in enumerate(paras) if len(p) > 300) - 1
        for title, abstract in zip(paras[start::2], paras[start + 1 :: 2], strict=False):
            key = " ".join(re.findall(r"[^\W_]+", fold(title)))
            seen.setdefault(key, (title, abstract))
    out: dict[str, set[str]] = {}
    for email, (keywords, exclude) in SUBSCRIBERS.items():
        out[email] = {
            title
            for title, abstract in seen.values()
            if any(naive_match(k, title + " \n " + abstract) for k in keywords)
            and not any(naive_match(x, title + " \n " + abstract) for x in exclude)
        }
    return out


def titles_in(sink: Sink, email: str) -> list[set[str]]:
    return [{title for title, _, _ in email_papers(msg)} for msg in sink.to(email)]


def status(config: Path) -> dict:
    result = run_cli("--config", config, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_once_delivers_each_match_exactly_once(
    tmp_path: Path, database_url: str, smtp_server: tuple[Sink, int]
) -> None:
    sink, port = smtp_server
    config = config_for(tmp_path, port, database_url)
    old = time.time() - 3600
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=old)

    first = run_cli("--config", config, "run", "--once")
    assert first.returncode == 0, first.stderr
    want = expected(["digest-a.txt"])
    assert want["dave@example.org"] == set()
    assert [len(want[e]) for e in SUBSCRIBERS] == [7, 2, 17, 0]  # the independent evaluation is not empty
    for email, titles in want.items():
        got = titles_in(sink, email)
        assert got == ([titles] if titles else []), email  # one email, exactly the selected papers
    assert sink.to("bob@example.org")[0]["Subject"].startswith(f"{len(want['bob@example.org'])} new papers")
    assert "cycle.done" in first.stderr
    emails_after_first = len(sink.messages)
    after_first = status(config)
    assert after_first["papers"] == 39 and after_first["files"] == 1
    sent = sum(map(len, want.values()))
    assert after_first["deliveries"] == {
        "pending": 0,
        "sending": 0,
        "sent": sent,
        "failed": 0,
        "cancelled": 0,
    }

    second = run_cli("--config", config, "run", "--once")
    assert second.returncode == 0, second.stderr
    assert len(sink.messages) == emails_after_first  # nothing the second time
    assert status(config) | {"last_run": None} == after_first | {"last_run": None}

    # a later digest repeating some papers in other spellings
    later = (FIXTURES / "digest-c.txt").read_text()
    later = later.replace("TÜLU 3: Pushing Frontiers", 'T\\"ULU 3 -- Pushing frontiers')
    later = later.replace("Learning from Future: A Novel", "Learning From Future - a novel")
    (tmp_path / "inbox" / "digest-c.txt").write_text(later)
    os.utime(tmp_path / "inbox" / "digest-c.txt", (old, old))
    third = run_cli("--config", config, "run", "--once")
    assert third.returncode == 0, third.stderr
    both = expected(["digest-a.txt", "digest-c.txt"])
    for email in SUBSCRIBERS:
        new = both[email] - want[email]
        assert titles_in(sink, email) == [t for t in (want[email], new) if t], email
    final = status(config)
    assert final["papers"] == 39 + 52 and final["files"] == 2
    assert final["deliveries"]["sent"] == sum(map(len, both.values()))

    feeds = sorted(p for p in (tmp_path / "feeds").rglob("*.*") if p.suffix in (".atom", ".rss"))
    assert len(feeds) == 2 + 2 * len(SUBSCRIBERS)
    assert (tmp_path / "feeds" / ".paperboy-feeds").is_file()  # what they were rendered from
    for path in feeds:
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, (path, parsed.get("bozo_exception"))
    all_atom = feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes())
    assert len(all_atom.entries) == 91
    assert len({e.id for e in all_atom.entries}) == 91


def test_failed_send_stays_pending_and_is_sent_once_later(tmp_path: Path, database_url: str) -> None:

    port = free_port()  # nothing listens yet
    config = config_for(tmp_path, port, database_url, retry_after="0s")  # due again at once
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    down = run_cli("--config", config, "run", "--once")
    assert down.returncode == 1
    # A server that cannot be reached is the setup's fault, not weather: the run stops at
    # the first error with one ERROR line naming the keys to check, and counts no attempt.
    errors = [line for line in down.stderr.splitlines() if " ERROR deliver." in line]
    assert len(errors) == 1 and "deliver.halted" in errors[0], down.stderr
    assert f"cannot connect to 127.0.0.1:{port}" in errors[0] and "email.smtp.port" in errors[0]
    assert "deliver.failed" not in down.stderr
    now = status(config)
    pending = now["deliveries"]
    assert pending["sent"] == 0 and pending["pending"] > 0 and now["retrying"] == []
    assert not now["last_run"]["ok"] and "cannot connect" in now["last_run"]["error"]

    sink = Sink()
    with serving(sink, port=port):
        up = run_cli("--config", config, "run", "--once")
        assert up.returncode == 0, up.stderr
        again = run_cli("--config", config, "run", "--once")
        assert again.returncode == 0
    want = expected(["digest-a.txt"])
    assert sorted(m["To"].addresses[0].addr_spec for m in sink.messages) == sorted(
        e for e, t in want.items() if t
    )
    assert status(config)["deliveries"] == {
        "pending": 0,
        "sending": 0,
        "sent": pending["pending"],
        "failed": 0,
        "cancelled": 0,
    }


def test_a_file_that_is_not_a_digest_is_moved_aside_and_fails_the_run(tmp_path: Path) -> None:
    """A README saved into the inbox brings no papers, no email and no feed entry: it is
    moved to inbox/rejected/ with the reason logged, the real digest beside it is taken,
    and `run --once` exits 1 so that cron mails the operator."""
    config = local_config(
        tmp_path,
        "  - email: alice@example.org\n    keywords: [matching, model]\n",
        extra="http: {enabled: false}\n",
    )
    inbox = tmp_path / "inbox"
    copy_digest("digest-a.txt", inbox)
    (inbox / "notes.txt").write_text((Path(__file__).parent.parent / "README.md").read_text())
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 1
    rejected = [line for line in done.stderr.splitlines() if " ERROR ingest.rejected " in line]
    assert len(rejected) == 1 and "notes.txt: not a digest" in rejected[0], done.stderr
    assert "inbox.moved_aside" in done.stderr and "cycle.failed" in done.stderr
    assert not (inbox / "notes.txt").exists()
    assert (inbox / "rejected" / "notes.txt").read_text().startswith("# paperboy")
    now = status(config)
    assert (now["papers"], now["files"]) == (39, 1)
    assert "1 file(s) rejected" in now["last_run"]["error"]
    entries = feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes()).entries
    assert len(entries) == 39 and not any("Matching" in e.title for e in entries)

    # Put back unchanged, it is refused again (not skipped as known), beside the first copy.
    (inbox / "rejected" / "notes.txt").rename(inbox / "notes.txt")
    (inbox / "rejected" / "old.txt").write_text("kept")
    again = run_cli("--config", config, "run", "--once")
    assert again.returncode == 1 and "not a digest" in again.stderr
    assert (inbox / "rejected" / "notes.txt").exists()

    quiet = run_cli("--config", config, "run", "--once")  # nothing new, nothing wrong: exit 0
    assert quiet.returncode == 0, quiet.stderr


def test_a_quiet_cycle_builds_no_rule_index_and_reads_no_subscriber(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With nothing new, a cycle neither builds the index of every rule nor reads the
    subscribers (their rows are read when a paper needs matching)."""
    from service import store
    from service.cycle import App
    from service.settings import parse_settings
    from tests.helpers import local_yaml

    settings = parse_settings(
        local_yaml(tmp_path, "  - email: alice@example.org\n    keywords: [model]\n"),
        source="t.yaml",
        base=tmp_path,
    )
    (tmp_path / "inbox").mkdir()
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    App(settings, progress=False).cycle(send=False)  # the digest is matched: the index was needed

    quiet = App(settings, progress=False)  # as a new `run --once` process would
    reads: list[str] = []
    real = store.receiving
    monkeypatch.setattr(store, "receiving", lambda **kw: reads.append("receiving") or real(**kw))
    statements: list[str] = []
    event.listen(quiet.engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql))
    report = quiet.cycle(send=False)
    assert report.matched_papers == 0 and report.feeds_changed == 0
    assert quiet._index is None and reads == []
    # the configuration is the last run's: one row each says so for the roster and the rules
    # (the feeds' stamp counts the subscribers: one aggregate, no row)
    every_row = re.compile(r"FROM rule_fingerprints\s*$")  # no WHERE: every owner's fingerprint
    per_subscriber = [
        sql
        for sql in statements
        if ("FROM subscribers" in sql and "count(" not in sql) or every_row.search(sql)
    ]
    assert per_subscriber == [] and any("FROM rule_fingerprints" in sql for sql in statements)
    copy_digest("digest-c.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    assert quiet.cycle(send=False).matched_papers > 0  # new papers: now it is built and read
    assert quiet._index is not None and reads == ["receiving"]
    quiet.engine.dispose()


def test_matching_goes_through_the_papers_in_batches_each_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each batch starts after the last paper of the one before; none is skipped, a forgotten
    one is not matched, and every other paper that holds the keyword is queued once."""
    from sqlalchemy import text

    from service import match, store
    from service.cycle import App
    from service.ingest import ingest_file
    from service.settings import parse_settings
    from tests.helpers import local_yaml

    settings = parse_settings(
        local_yaml(tmp_path, "  - email: alice@example.org\n    keywords: [model]\n"),
        source="t.yaml",
        base=tmp_path,
    )
    app = App(settings, progress=False)
    app.prepare_store()
    # stored without matching, as an older paperboy left them
    report = ingest_file(app.engine, copy_digest("digest-a.txt", tmp_path / "inbox"), at=app.clock())
    with app.engine.begin() as conn:
        conn.execute(text("UPDATE papers SET forgotten_at = first_seen_at WHERE id = 10"))
        papers = conn.execute(text("SELECT title, abstract FROM papers WHERE id <> 10")).all()
    monkeypatch.setattr(match, "MATCH_BATCH", 7)
    done, queued = match.match_new(app.engine, lambda: app.index, at=app.clock())
    assert done == report.new_papers - 1 > 7 * 3
    assert queued == sum(1 for t, a in papers if naive_match("model", t) or naive_match("model", a)) > 7
    with store.reading(app.engine) as session:
        assert store.counts(session=session)["unmatched_papers"] == 1  # the forgotten one
    app.engine.dispose()


def test_new_rules_are_followed_before_new_papers_are_stored(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A subscriber added to the configuration gets the papers already stored (the backfill)
    and the new ones (matched as they are stored); each paper is read once per rule set: the
    backfill runs first, so it does not read the papers that came with this cycle again."""
    from sqlmodel import select

    from service import store
    from service.cycle import App
    from service.rules import Index
    from service.settings import parse_settings
    from tests.helpers import local_yaml

    def app(subscribers: str) -> App:
        return App(
            parse_settings(local_yaml(tmp_path, subscribers), source="t.yaml", base=tmp_path), progress=False
        )

    alice = "  - email: alice@example.org\n    keywords: [model]\n"
    bob = "  - email: bob@example.org\n    keywords: [language]\n"
    (tmp_path / "inbox").mkdir()
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    app(alice).cycle(send=False)

    reads: list[str] = []
    real = Index.match
    monkeypatch.setattr(
        Index, "match", lambda index, title, text: reads.append(title) or real(index, title, text)
    )
    copy_digest("digest-c.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    second = app(alice + bob)
    report = second.cycle(send=False)
    assert len(reads) == len(set(reads)) == 39 + 52  # digest-a's for bob alone, then digest-c's new ones
    with store.reading(second.engine) as session:
        bob_id = store.active_subscribers(session=session)["bob@example.org"].id
        bobs = {d.paper_id for d in session.exec(select(store.Delivery)) if d.subscriber_id == bob_id}
        papers = session.exec(select(store.Paper)).all()
    assert bobs == {
        p.id for p in papers if naive_match("language", p.title) or naive_match("language", p.abstract)
    }
    assert report.matched_papers == 52 and report.queued > 0
    second.engine.dispose()
