"""The commands as a user types them; exit codes 0 ok, 1 failure, 2 usage/config."""

import json
import mailbox
import re
import signal
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx

from tests.helpers import ROOT, Service, copy_digest, free_port, run_cli, write_config


def maildir_config(tmp_path: Path, extra: str = "") -> Path:
    return write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: sqlite:///db/paperboy.db
inbox: inbox
inbox_settle: 0s
email:
  from: "paperboy <papers@example.org>"
  maildir: mail
feeds:
  dir: feeds
subscribers:
  - email: bob@example.org
    keywords: [TÜLU, gaussian]
{extra}http:
  port: {free_port()}
""",
    )


def test_check_accepts_a_good_config_and_hides_the_password(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            "  maildir: mail\n", "  maildir: mail\n  smtp: {host: mx, username: u, password: '${PB_PW}'}\n"
        )
    )
    result = run_cli("--config", config, "check", env={"PB_PW": "hunter2-secret"})
    assert result.returncode == 0, result.stderr
    assert "OK: 1 subscribers" in result.stdout
    assert "hunter2-secret" not in result.stdout + result.stderr


def test_check_names_a_misspelt_key_and_exits_2(tmp_path: Path) -> None:
    config = maildir_config(tmp_path, "    exlude: [survey]\n")
    result = run_cli("--config", config, "check")
    assert result.returncode == 2
    assert (
        f"{config}:12: subscribers[0] (bob@example.org).exlude: unknown key; did you mean 'exclude'?"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_bad_config_stops_run_before_anything_is_touched(tmp_path: Path) -> None:
    config = maildir_config(tmp_path, "    keywords: [again]\n")
    result = run_cli("--config", config, "run", "--once")
    assert result.returncode == 2 and "configuration error" in result.stderr
    assert not (tmp_path / "db").exists()


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("--config", tmp_path / "nope.yaml", "check")
    assert result.returncode == 2 and "no such configuration file" in result.stderr


def test_usage_error_exits_2() -> None:
    assert run_cli("frobnicate").returncode == 2


def test_maildir_run_ingest_preview_and_status(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    assert run_cli("--config", config, "run", "--once").returncode == 0  # empty inbox: nothing to do
    assert json.loads(run_cli("--config", config, "status", "--json").stdout)["papers"] == 0

    named = copy_digest("digest-a.txt", tmp_path / "elsewhere")
    ingest = run_cli("--config", config, "ingest", named)
    assert ingest.returncode == 0, ingest.stderr
    assert "ingested: 39 entries, 39 new, 0 problems" in ingest.stdout

    preview = run_cli("--config", config, "preview", "bob@example.org")
    assert preview.returncode == 0, preview.stderr
    assert "TÜLU 3: Pushing Frontiers" in preview.stdout and "Title mentions TÜLU" in preview.stdout
    eml = tmp_path / "next.eml"
    assert (
        run_cli("--config", config, "preview", "bob@example.org", "--format", "eml", "-o", eml).returncode
        == 0
    )
    previewed = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert run_cli("--config", config, "preview", "nobody@example.org").returncode == 2

    assert run_cli("--config", config, "run", "--once").returncode == 0
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    [sent] = [BytesParser(policy=policy.default).parsebytes(m.as_bytes()) for m in box]
    assert sent["Message-ID"] == previewed["Message-ID"]  # the preview is what goes out
    assert sent["Subject"] == previewed["Subject"]
    status = json.loads(run_cli("--config", config, "status", "--json").stdout)
    assert status["papers"] == 39 and status["files"] == 1
    assert status["deliveries"] == {"pending": 0, "sending": 0, "sent": 2, "failed": 0, "cancelled": 0}
    assert status["failures"] == []
    assert "nothing pending" in run_cli("--config", config, "preview", "bob@example.org").stderr


def test_ingest_of_a_damaged_and_an_empty_file(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    damaged = tmp_path / "damaged.txt"
    damaged.write_bytes((ROOT / "tests/fixtures/digest-a.txt").read_bytes() + b"\n\nA title cut off")
    result = run_cli("--config", config, "ingest", damaged, empty)
    assert result.returncode == 1
    assert f"digest.problem at={damaged}:167 " in result.stderr
    assert "problem=\"title 'A title cut off' has no abstract" in result.stderr
    assert f"{empty}: rejected: {empty}: the file is empty" in result.stdout
    assert "ingested: 39 entries, 39 new, 1 problems" in result.stdout
    assert run_cli("--config", config, "ingest", tmp_path / "missing.txt").returncode == 2


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.startswith("paperboy ")


def test_run_polls_reloads_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = maildir_config(tmp_path)
    config.write_text(config.read_text() + "schedule:\n  poll: 1s\n")
    (tmp_path / "inbox").mkdir()
    with Service(config) as service:
        proc = service.proc
        wait_for(lambda: (tmp_path / "db" / "paperboy.db").exists())
        copy_digest("digest-a.txt", tmp_path / "inbox")
        wait_for(
            lambda: (
                (tmp_path / "feeds" / "all.atom").exists()
                and b"Pushing Frontiers" in (tmp_path / "feeds" / "all.atom").read_bytes()
            )
        )
        # the same process serves HTTP: the feed it just wrote, and its health
        port = re.search(r"port: (\d+)", config.read_text()).group(1)  # type: ignore[union-attr]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["store"] == "ok"
        feed = httpx.get(f"http://127.0.0.1:{port}/feeds/all.atom", timeout=10)
        assert feed.status_code == 200 and b"Pushing Frontiers" in feed.content
        config.write_text(config.read_text() + "bogus_key: 1\n")  # an invalid edit
        service.wait_for("config.rejected")
        config.write_text(config.read_text().replace("bogus_key: 1\n", "").replace("gaussian", "nerf"))
        service.wait_for("config.reloaded")
        assert proc.poll() is None  # still running on the last good configuration
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    err = "".join(service.log)
    assert proc.returncode == 0, err
    assert "service.started" in err and "ingest.file" in err
    assert "config.rejected" in err and "bogus_key: unknown key" in err
    assert "config.reloaded" in err
    assert "service.stopping signal=SIGTERM" in err and "service.stopped" in err


def wait_for(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)
