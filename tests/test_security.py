"""Security basics: feed tokens, feed file names, and SMTP passwords kept out of every output."""

from __future__ import annotations

import re
import time
from pathlib import Path

from sqlalchemy import Engine

from service import store
from tests.helpers import copy_digest, free_port, run_cli, sync, write_config


def test_tokens_are_random_not_derived_from_the_address(engine: Engine, tmp_path: Path) -> None:
    people = [("annabelle.quartermain@example.org", None), ("bobbie.zimmerman@example.org", None)]
    with store.transaction(engine) as s:
        first = {e: sub.token for e, sub in sync(s, people).items()}
    other = store.make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    store.upgrade(other)
    with store.transaction(other) as s:
        second = {e: sub.token for e, sub in sync(s, people).items()}
    other.dispose()
    ann = "annabelle.quartermain@example.org"
    assert first[ann] != second[ann]  # the same address, another store
    for token in [*first.values(), *second.values()]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", token)  # 144 random bits, URL-safe
        # nothing of the address in it (a name of three letters could turn up by chance: these cannot)
        assert not any(part in token.lower() for part in ("annabelle", "quartermain", "zimmerman", "example"))
    with store.transaction(engine) as s:  # stable while the subscriber exists
        again = sync(s, people)
    assert {e: sub.token for e, sub in again.items()} == first


def test_no_address_in_feed_names_and_no_password_in_any_output(tmp_path: Path) -> None:
    secret = "hunter2-Secret-Pw"
    port = free_port()  # nothing listens: the send fails and is logged
    config = write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: sqlite:///{tmp_path}/db.sqlite
inbox: {tmp_path}/inbox
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, username: papers, password: "${{PB_SMTP_PASSWORD}}", timeout: 2s}}
feeds:
  dir: {tmp_path}/feeds
subscribers:
  - email: carol.secretname@example.org
    keywords: [LLM]
""",
    )
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=time.time() - 3600)
    env = {"PB_SMTP_PASSWORD": secret}

    outputs = [
        run_cli("--config", config, "-v", "run", "--once", env=env),  # debug logging, a failed send
        run_cli("--config", config, "check", env=env),
        run_cli("--config", config, "status", env=env),
        run_cli("--config", config, "status", "--json", env=env),
        run_cli("--config", config, "preview", "carol.secretname@example.org", "--format", "eml", env=env),
    ]

    assert outputs[0].returncode == 1 and "deliver.halted" in outputs[0].stderr
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    feed_files = [
        str(p.relative_to(tmp_path / "feeds")) for p in (tmp_path / "feeds").rglob("*") if p.is_file()
    ]
    assert any(name.startswith("u/") for name in feed_files)
    for name in feed_files:
        assert "secretname" not in name and "@" not in name and "carol" not in name
    assert not any(
        secret in p.read_text(errors="replace") for p in (tmp_path / "feeds").rglob("*") if p.is_file()
    )
