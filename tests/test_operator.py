"""The operator's commands, as typed: forget, rematch and backfill, status of each
subscriber, check --connect, send-test. Each against a real store, a real maildir or
SMTP server, and feeds read back by feedparser."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import feedparser

from tests.helpers import copy_digest, free_port, run_cli, write_config


def config_at(tmp_path: Path, subscribers: str, *, extra: str = "") -> Path:
    return write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
email: {{maildir: {tmp_path}/mail}}
feeds: {{dir: {tmp_path}/feeds}}
http: {{port: {free_port()}}}
topics:
  vision: {{keywords: [gaussian, nerf, 3d]}}
{extra}subscribers:
{subscribers}""",
    )


BOB = "  - email: bob@example.org\n    keywords: [model]\n    topics: [vision]\n"


def ok(*args: str | Path) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def status(config: Path) -> dict:
    return json.loads(ok("--config", config, "status", "--json"))


def entries(tmp_path: Path, name: str) -> list[str]:
    return [e.title for e in feedparser.parse((tmp_path / "feeds" / name).read_bytes()).entries]


# ---------------------------------------------------------------- forget


def test_forget_a_file_takes_only_what_no_other_file_brought(tmp_path: Path) -> None:
    """digest-a (39 papers) is sent; digest-c (63, 11 of them also in digest-a) is matched and
    pending. Forgetting digest-c keeps the 11, takes the other 52 out of every feed, cancels
    their pending deliveries, and leaves what was sent recorded."""
    config = config_at(tmp_path, BOB)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    sent = status(config)["deliveries"]["sent"]
    assert sent > 0
    later = copy_digest("digest-c.txt", tmp_path / "elsewhere")
    ok("--config", config, "ingest", later)
    before = status(config)["deliveries"]
    assert before["pending"] > 0

    dry = ok("--config", config, "forget", "--file", "digest-c.txt", "--dry-run")
    assert "52 papers only it brought; 11 also brought by another file are kept" in dry
    assert status(config)["forgotten_papers"] == 0

    out = ok("--config", config, "forget", "--file", later)
    assert "forgot 52 papers" in out
    after = status(config)
    assert after["forgotten_papers"] == 52
    assert after["deliveries"]["sent"] == sent  # history stays
    cancelled = after["deliveries"]["cancelled"]
    assert cancelled > 0 and after["deliveries"]["pending"] + cancelled == before["pending"]
    assert len(entries(tmp_path, "all.atom")) == 39
    digest_c_only = set((later.read_text()).split("\n\n")) - set(
        (tmp_path / "inbox" / "digest-a.txt").read_text().split("\n\n")
    )
    for name in ("all.atom", "all.rss", "topics/vision.atom"):
        assert not digest_c_only & set(entries(tmp_path, name)), name

    # The next run sends only what was not forgotten; the forgotten never come back.
    ok("--config", config, "run", "--once")
    ok("--config", config, "ingest", later)
    assert status(config)["forgotten_papers"] == 52 and status(config)["deliveries"]["pending"] == 0


def test_forget_papers_by_title(tmp_path: Path) -> None:
    config = config_at(tmp_path, BOB)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    out = ok("--config", config, "forget", "gs-dit advancing video generation", "SemiCD-VL")
    assert "forgot 2 papers" in out
    titles = entries(tmp_path, "all.atom")
    assert len(titles) == 37 and not any(t.startswith(("GS-DiT", "SemiCD-VL")) for t in titles)
    vague = run_cli("--config", config, "forget", "learning")
    assert vague.returncode == 2 and "papers have titles like 'learning'; say which" in vague.stderr
    unknown = run_cli("--config", config, "forget", "--file", "never-seen.txt")
    assert unknown.returncode == 2 and "no ingested file is 'never-seen.txt'" in unknown.stderr
    assert status(config)["forgotten_papers"] == 2


def test_a_mail_already_in_the_maildir_is_history(tmp_path: Path) -> None:
    config = config_at(tmp_path, BOB)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    assert len(box) == 1
    ok("--config", config, "forget", "--file", "digest-a.txt")
    assert len(box) == 1 and status(config)["deliveries"]["cancelled"] == 0


# ---------------------------------------------------------------- backfill and rematch

CAROL = "  - email: carol@example.org\n    keywords: [gaussian]\n"


def test_a_subscriber_added_later_receives_the_last_days_once(tmp_path: Path) -> None:
    config = config_at(tmp_path, BOB)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    first = status(config)["deliveries"]["sent"]

    config.write_text(config.read_text() + CAROL)  # carol joins; nothing new arrives
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 0, done.stderr
    assert "match.backfill" in done.stderr
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    to_carol = [m for m in box if "carol@example.org" in m["To"]]
    assert len(to_carol) == 1
    gaussian = [
        line for line in (tmp_path / "inbox" / "digest-a.txt").read_text().split("\n\n") if "aussian" in line
    ]
    assert gaussian  # the digest has papers on Gaussians; carol's one email carries them
    carol_sent = status(config)["deliveries"]["sent"] - first
    assert carol_sent > 0
    explain = ok("--config", config, "explain", "carol@example.org", "GS-DiT")
    assert "store: delivery sent" in explain

    again = run_cli("--config", config, "run", "--once")  # seen once: no second backfill
    assert again.returncode == 0 and "match.backfill" not in again.stderr
    assert status(config)["deliveries"]["sent"] == first + carol_sent
    assert len(box) == 2


def test_backfill_zero_turns_it_off_and_rematch_does_it_by_hand(tmp_path: Path) -> None:
    config = config_at(tmp_path, BOB, extra="backfill: 0\n")
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    config.write_text(config.read_text() + CAROL)
    ok("--config", config, "run", "--once")
    assert not [m for m in mailbox.Maildir(tmp_path / "mail", create=False) if "carol" in m["To"]]
    explain = ok("--config", config, "explain", "carol@example.org", "GS-DiT")
    assert "no delivery recorded" in explain and "paperboy rematch --since DAYS carol@example.org" in explain

    out = ok("--config", config, "rematch", "--since", "2", "carol@example.org")
    queued = int(out.split("deliveries queued")[0].rsplit(" ", 2)[-2])
    assert queued > 0 and "for 1 subscribers and topics" in out
    assert status(config)["deliveries"]["pending"] == queued
    twice = ok("--config", config, "rematch", "--since", "2")  # everyone: nothing is queued twice
    assert "0 deliveries queued" in twice
    unknown = run_cli("--config", config, "rematch", "--since", "2", "nobody@example.org")
    assert unknown.returncode == 2 and "neither a subscriber nor a topic" in unknown.stderr


def test_a_topic_added_later_fills_its_feed_and_its_followers(tmp_path: Path) -> None:
    dave = "  - email: dave@example.org\n    topics: [vision]\n"
    config = config_at(tmp_path, dave)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "run", "--once")
    sent = status(config)["deliveries"]["sent"]
    text = config.read_text().replace("topics:\n", "topics:\n  safety: {keywords: [jailbreak*, harmful]}\n")
    config.write_text(text.replace("topics: [vision]", "topics: [vision, safety]"))
    ok("--config", config, "run", "--once")
    safety = entries(tmp_path, "topics/safety.atom")
    assert safety
    now = status(config)["deliveries"]
    assert now["pending"] == 0 and now["sent"] == sent + len(safety)  # none of them was a vision paper
    assert len(mailbox.Maildir(tmp_path / "mail", create=False)) == 2
