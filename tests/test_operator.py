"""The operator's commands, as typed: forget, rematch and backfill, status of each
subscriber, check --connect, send-test. Each against a real store, a real maildir or
SMTP server, and feeds read back by feedparser."""

from __future__ import annotations

import json
import mailbox
import os
from pathlib import Path

import feedparser
import pytest
from aiosmtpd.smtp import AuthResult

from tests.helpers import Sink, copy_digest, fetch, free_port, local_config, run_cli, serving


def config_at(tmp_path: Path, subscribers: str, *, extra: str = "", email: str | None = None) -> Path:
    """A local configuration with a topic (``vision``) and a free port."""
    topics = f"http: {{port: {free_port()}}}\ntopics:\n  vision: {{keywords: [gaussian, nerf, 3d]}}\n"
    return local_config(tmp_path, subscribers, extra=topics + extra, email=email)


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


# ---------------------------------------------------------------- check --connect, send-test


def smtp_at(port: int, extra: str = "") -> str:
    sender = "  from: 'paperboy <papers@example.org>'\n"
    return f"email:\n{sender}  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {port}{extra}}}"


def test_check_connect_tries_everything_and_creates_the_folders(tmp_path: Path) -> None:
    sink = Sink()
    with serving(sink) as port:
        config = config_at(tmp_path, BOB, email=smtp_at(port))
        done = run_cli("--config", config, "check", "--connect")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": OK: " in line)
    assert set(lines) >= {"database", "inbox", "feeds.dir", "email.smtp"}, done.stdout
    assert (
        "(created)" in lines["feeds.dir"] and (tmp_path / "feeds").is_dir() and (tmp_path / "inbox").is_dir()
    )
    assert f"127.0.0.1:{port} answers (no TLS, no login); nothing was sent" in lines["email.smtp"]
    assert sink.messages == []


def test_check_connect_names_each_thing_that_will_fail(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    down = free_port()
    config = config_at(tmp_path, BOB, email=smtp_at(down))
    config.write_text(
        config.read_text()
        .replace(f"feeds: {{dir: {tmp_path}/feeds}}", f"feeds: {{dir: {tmp_path}/a-file/feeds}}")
        .replace(
            f"sqlite:///{tmp_path}/paperboy.db",
            "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2",
        )
    )
    done = run_cli("--config", config, "check", "--connect")
    assert done.returncode == 1
    failed = {line.split(": ", 1)[0]: line for line in done.stdout.splitlines() if ": FAILED: " in line}
    assert set(failed) == {"database", "feeds.dir", "email.smtp"}, done.stdout
    assert "fix database" in failed["database"]
    assert "a-file/feeds is not writable" in failed["feeds.dir"] and "fix feeds.dir" in failed["feeds.dir"]
    assert f"cannot connect to 127.0.0.1:{down}" in failed["email.smtp"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_check_connect_says_when_the_login_is_refused(tmp_path: Path) -> None:
    def refuse(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        return AuthResult(success=False, handled=False)

    with serving(Sink(), authenticator=refuse, auth_required=True, auth_require_tls=False) as port:
        config = config_at(
            tmp_path, BOB, email=smtp_at(port, ", username: u, password: wrong, starttls: false")
        )
        done = run_cli("--config", config, "check", "--connect")
    assert done.returncode == 1
    assert (
        "email.smtp: FAILED: " in done.stdout
        and "535" in done.stdout
        and "email.smtp.password" in done.stdout
    )


def test_send_test_sends_a_real_digest_of_the_latest_papers(tmp_path: Path) -> None:
    sink = Sink()
    with serving(sink) as port:
        config = config_at(tmp_path, BOB, email=smtp_at(port))
        copy_digest("digest-a.txt", tmp_path / "elsewhere")
        ok("--config", config, "ingest", tmp_path / "elsewhere" / "digest-a.txt")
        out = ok("--config", config, "send-test", "someone@example.org")
    assert f"sent a digest of the latest 30 papers to someone@example.org by smtp 127.0.0.1:{port}" in out
    assert len(sink.messages) == 1 and sink.envelopes[0][1] == ["someone@example.org"]
    body = sink.messages[0].get_body(("plain",)).get_content()
    assert "SemiCD-VL" in body or "GS-DiT" in body
    assert status(config)["deliveries"]["sent"] == 0  # a test: no outbox row moved

    down = run_cli("--config", config, "send-test", "someone@example.org")  # the server is gone now
    assert down.returncode == 1 and "send-test: FAILED: cannot connect" in down.stderr


def test_send_test_to_the_maildir(tmp_path: Path) -> None:
    config = config_at(tmp_path, BOB, email="email: {maildir: mail/box, max_papers: 5}")
    empty = run_cli("--config", config, "send-test", "bob@example.org")
    assert empty.returncode == 2 and "no papers yet: ingest a digest first" in empty.stderr
    copy_digest("digest-a.txt", tmp_path / "elsewhere")
    ok("--config", config, "ingest", tmp_path / "elsewhere" / "digest-a.txt")
    out = ok("--config", config, "send-test", "bob@example.org")
    assert "latest 5 papers to bob@example.org by maildir" in out
    assert len(mailbox.Maildir(tmp_path / "mail" / "box", create=False)) == 1  # its folders made
    bad = run_cli("--config", config, "send-test", "not an address")
    assert bad.returncode == 2


# ---------------------------------------------------------------- folders


def test_a_folder_it_cannot_make_or_write_is_one_clear_error(tmp_path: Path) -> None:
    """A file where the feeds folder should be; and (when the tests do not run as root, for
    whom permission bits do not bind) a data folder it may not write, as a Docker bind
    mount owned by another user: one line naming the folder, the key and the fix, instead
    of "unable to open database file"."""
    config = config_at(tmp_path, BOB)
    (tmp_path / "feeds").write_text("a file in the way")
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 1
    assert f"cannot make {tmp_path}/feeds (feeds.dir): File exists; fix feeds.dir" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "feeds").unlink()
    if os.getuid() != 0:
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox").chmod(0o555)
        denied = run_cli("--config", config, "run", "--once")
        (tmp_path / "inbox").chmod(0o755)
        assert denied.returncode == 1
        assert (
            f"(inbox) is not writable by uid {os.getuid()}" in denied.stderr and "chown -R" in denied.stderr
        )


# ---------------------------------------------------------------- what status says


def test_status_lists_the_retrying_deliveries_with_their_error_and_next_attempt(tmp_path: Path) -> None:
    class Greylisting(Sink):
        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            return "451 4.7.1 greylisted, try again later"

    with serving(Greylisting()) as port:
        config = config_at(tmp_path, BOB, email=smtp_at(port))
        copy_digest("digest-a.txt", tmp_path / "inbox")
        done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 1 and "deliver.failed" in done.stderr and "deliver.halted" not in done.stderr
    report = status(config)
    (retry,) = report["retrying"]
    assert retry["email"] == "bob@example.org" and retry["attempts"] == 1 and "451" in retry["reason"]
    assert retry["next_attempt"] is not None and report["last_run"]["ok"] is False
    assert "deferred to a retry" in report["last_run"]["error"]
    text = ok("--config", config, "status")
    assert "retrying: bob@example.org: " in text and "after 1 attempts, next at " in text and "451" in text
    assert "next delivery: " in text and "last run: cycle at " in text and "FAILED" in text
    people = ok("--config", config, "status", "--subscribers")
    assert "bob@example.org: receiving, " in people and "/feeds/u/" in people and "/unsubscribe/" in people


@pytest.mark.parametrize(
    ("case", "smtp", "said"),
    [
        ("nothing listens", "", "cannot connect to"),
        ("starttls demanded, not offered", ", starttls: true", "does not offer STARTTLS"),
        ("implicit TLS on a plain port", ", tls: true", "TLS failed"),
        ("login refused", ", username: u, password: wrong, starttls: false", "535"),
    ],
)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_an_error_of_the_setup_stops_the_run_and_counts_no_attempt(
    tmp_path: Path, case: str, smtp: str, said: str
) -> None:
    def refuse(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        return AuthResult(success=False, handled=False)

    sink = Sink()
    kwargs = (
        {"authenticator": refuse, "auth_required": True, "auth_require_tls": False} if "login" in case else {}
    )
    with serving(sink, **kwargs) as port:
        target = free_port() if case == "nothing listens" else port
        config = config_at(tmp_path, BOB, email=smtp_at(target, smtp))
        copy_digest("digest-a.txt", tmp_path / "inbox")
        done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if " ERROR deliver." in line]
    assert len(errors) == 1 and "deliver.halted" in errors[0] and said in errors[0], done.stderr
    assert sink.messages == []
    report = status(config)
    assert report["deliveries"]["pending"] > 0 and report["retrying"] == [] and report["failures"] == []
    assert said in report["last_run"]["error"]


# ---------------------------------------------------------------- unsubscribe


def test_the_operator_unsubscribes_a_reader_who_wrote_in(tmp_path: Path) -> None:
    """`paperboy unsubscribe EMAIL` records the opt-out as one click would: what was pending
    is cancelled, the next run sends to the others only, the log names the address, and the
    reader's unsubscribe page says who they were and whom to write to (email.contact)."""
    from service import store
    from service.cycle import App
    from service.settings import load_settings

    alice = "  - email: alice@example.org\n    keywords: [model]\n"
    email = f"email: {{maildir: {tmp_path}/mail, contact: 'Papers desk <desk@example.org>'}}"
    config = config_at(tmp_path, alice + BOB, email=email)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    ok("--config", config, "ingest", str(tmp_path / "inbox" / "digest-a.txt"))
    assert status(config)["deliveries"]["pending"] > 0

    done = run_cli("--config", config, "unsubscribe", "Alice@Example.org")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("alice@example.org is unsubscribed: nothing more is sent")
    assert "subscriber.unsubscribed subscriber=1 email=alice@example.org via=operator" in done.stderr
    again = run_cli("--config", config, "unsubscribe", "alice@example.org")
    assert again.returncode == 0 and "had unsubscribed already; nothing changed" in again.stdout
    unknown = run_cli("--config", config, "unsubscribe", "carol@example.org")
    assert unknown.returncode == 2 and "carol@example.org is not a subscriber in the store" in unknown.stderr

    ok("--config", config, "run", "--once")
    sent = [m["To"] for m in mailbox.Maildir(tmp_path / "mail", create=False)]
    assert sent and all(to == "bob@example.org" for to in sent)
    assert status(config)["unsubscribed_emails"][0]["email"] == "alice@example.org"

    settings = load_settings(config)
    app = App(settings, progress=False)
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
        assert sub is not None
        token = sub.token
    page = fetch(app, f"/unsubscribe/{token}")
    app.engine.dispose()
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert "<strong>alice@example.org</strong>" in page.text
    assert '<a href="mailto:desk@example.org">Papers desk</a>' in page.text
