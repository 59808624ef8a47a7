"""Hostile or careless state in the store, from outside (whole `paperboy` processes): a
database migrated by a newer paperboy, subscribers removed from the YAML with mail still
pending. Each case failed before it was fixed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from service.store import head_revision
from tests.helpers import copy_digest, free_port, local_config, run_cli


def config_at(tmp_path: Path, people: list[str]) -> Path:
    subscribers = "".join(f"  - email: {p}\n    keywords: [model]\n" for p in people)
    return local_config(tmp_path, subscribers, extra=f"http: {{port: {free_port()}}}\n")


def status(config: Path) -> dict:
    done = run_cli("--config", config, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["run", "--once"],
        ["db", "current"],
        ["db", "upgrade"],
        ["ingest", "x"],
        ["check"],
        ["serve"],
    ],
)
def test_a_database_from_a_newer_paperboy_is_refused_in_one_line(tmp_path: Path, command: list[str]) -> None:
    config = config_at(tmp_path, ["alice@example.org"])
    assert run_cli("--config", config, "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "paperboy.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    (tmp_path / "x").write_text("not read")
    done = run_cli("--config", config, *[str(tmp_path / "x") if a == "x" else a for a in command])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "paperboy: the database was migrated by a newer paperboy (revision 0099; this one knows up to "
        f"{head_revision()}); upgrade paperboy"
    ], done.stderr
    with sqlite3.connect(tmp_path / "paperboy.db") as db:  # and it was left as it was
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0099",)]


def test_a_subscriber_who_leaves_the_yaml_has_their_pending_mail_cancelled(tmp_path: Path) -> None:
    config = config_at(tmp_path, ["alice@example.org", "bob@example.org"])
    copy_digest("digest-a.txt", tmp_path / "elsewhere")
    assert run_cli("--config", config, "ingest", tmp_path / "elsewhere" / "digest-a.txt").returncode == 0
    pending = status(config)["deliveries"]["pending"]
    assert pending > 0 and pending % 2 == 0  # the same keywords: half each

    config_at(tmp_path, ["alice@example.org"])  # bob leaves
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 0, done.stderr
    now = status(config)
    assert now["deliveries"]["pending"] == 0 and now["deliveries"]["sending"] == 0
    assert now["deliveries"]["sent"] == pending // 2
    assert (now["left_configuration"], now["cancelled_left"]) == (1, pending // 2)
    text = run_cli("--config", config, "status").stdout
    assert f"1 left the configuration, their {pending // 2} pending deliveries cancelled" in text

    config_at(tmp_path, ["alice@example.org", "bob@example.org"])  # bob comes back
    back = run_cli("--config", config, "run", "--once")
    assert back.returncode == 0, back.stderr
    again = status(config)
    assert again["deliveries"]["sent"] == pending and again["cancelled_left"] == 0
