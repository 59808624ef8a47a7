"""``status`` and ``check`` read the store through service.glance: plain SQL on the driver's
connection. On both backends it says what the store holds, and on SQLite the read-only
``sqlite3`` path and the store package's session say the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from service import glance, status, store
from service.settings import load_settings
from tests.helpers import copy_digest, local_config, run_cli, write_config

PEOPLE = (
    "  - email: alice@example.org\n    keywords: [model]\n"
    "  - email: bob@example.org\n    keywords: [learning]\n"
    "  - email: carol@example.org\n    keywords: [language]\n"
)


def a_used_store(tmp_path: Path, database_url: str) -> tuple[Path, int]:
    """A store after a delivering run, then with a bit of everything status reports: failed
    and retrying deliveries, a reader who unsubscribed, one who left with papers pending, a
    forgotten paper. Returns the configuration and how many papers Alice has pending."""
    config = local_config(tmp_path, PEOPLE)
    write_config(config, config.read_text().replace(f"sqlite:///{tmp_path}/paperboy.db", database_url))
    copy_digest("digest-a.txt", tmp_path / "inbox")
    done = run_cli("--config", config, "run", "--once")
    assert done.returncode == 0, done.stderr
    digest_b = copy_digest("digest-b.txt", tmp_path / "inbox")
    assert run_cli("--config", config, "ingest", digest_b).returncode == 0  # queued, not sent
    write_config(
        config, config.read_text().replace("  - email: carol@example.org\n    keywords: [language]\n", "")
    )
    assert run_cli("--config", config, "ingest", digest_b).returncode == 0  # Carol left: cancelled
    assert run_cli("--config", config, "unsubscribe", "bob@example.org").returncode == 0
    later = "'2031-01-02 03:04:05" + ("'" if database_url.startswith("sqlite") else "+00'")
    engine = store.make_engine(database_url)
    with engine.begin() as conn:
        alice = conn.execute(text("SELECT id FROM subscribers WHERE email = 'alice@example.org'")).scalar()
        mine = f"subscriber_id = {alice}"
        sent = [
            i for (i,) in conn.execute(text(f"SELECT id FROM deliveries WHERE {mine} AND state = 'sent'"))
        ]
        pending = conn.execute(
            text(f"SELECT COUNT(*) FROM deliveries WHERE {mine} AND state = 'pending'")
        ).scalar()
        failed, retrying = ", ".join(map(str, sent[:3])), ", ".join(map(str, sent[3:5]))
        conn.execute(
            text(
                "UPDATE deliveries SET state = 'failed', attempts = 3, last_error = '550 no such user'"
                f" WHERE id IN ({failed})"
            )
        )
        conn.execute(
            text(
                "UPDATE deliveries SET state = 'pending', attempts = 1, last_error = '451 later',"
                f" next_attempt_at = {later} WHERE id IN ({retrying})"
            )
        )
        conn.execute(
            text("UPDATE papers SET forgotten_at = matched_at WHERE id = (SELECT MIN(id) FROM papers)")
        )
    engine.dispose()
    return config, int(pending) + 2


def test_status_says_what_the_store_holds_on_both_backends(tmp_path: Path, database_url: str) -> None:
    config, pending = a_used_store(tmp_path, database_url)
    done = run_cli("--config", config, "status", "--json", "--subscribers")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["failures"] == [
        {"email": "alice@example.org", "reason": "550 no such user", "papers": 3, "attempts": 3}
    ]
    assert report["retrying"] == [
        {
            "email": "alice@example.org",
            "reason": "451 later",
            "papers": 2,
            "attempts": 1,
            "next_attempt": "2031-01-02T03:04:05+00:00",
        }
    ]
    assert [u["email"] for u in report["unsubscribed_emails"]] == ["bob@example.org"]
    assert report["subscribers"] == 2 and report["unsubscribed"] == 1 and report["left_configuration"] == 1
    assert report["cancelled_left"] > 0 and report["forgotten_papers"] == 1 and report["files"] == 2
    assert report["deliveries"]["failed"] == 3 and report["deliveries"]["sent"] > 0
    assert report["last_run"]["job"] == "cycle" and report["last_run"]["ok"] is True
    people = {p["email"]: p for p in report["subscriber_list"]}
    assert [people[e]["state"] for e in sorted(people)] == [
        "receiving",
        "unsubscribed",
        "left the configuration",
    ]
    assert people["alice@example.org"]["pending"] == pending and people["alice@example.org"]["last_sent"]

    checked = run_cli("--config", config, "check")
    assert checked.returncode == 0, checked.stderr
    assert "unsubscribed: bob@example.org since" in checked.stdout


def test_the_sqlite_path_reads_what_the_store_package_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = a_used_store(tmp_path, f"sqlite:///{tmp_path}/paperboy.db")
    settings = load_settings(config)
    connection = glance.open_sqlite(settings.database)
    assert connection is not None  # at the newest schema: read without SQLAlchemy
    connection.close()
    quick = status.report(settings, subscribers=True)
    monkeypatch.setattr(glance, "open_sqlite", lambda database: None)
    through_the_store = status.report(settings, subscribers=True)
    for report in (quick, through_the_store):
        report.pop("next_delivery")  # read from the clock, a moment apart
    assert quick == through_the_store
    assert quick["failures"] and quick["retrying"] and quick["unsubscribed_emails"]


def test_an_older_store_is_migrated_by_the_store_package_not_read_as_it_is(tmp_path: Path) -> None:
    config = local_config(tmp_path, PEOPLE)
    settings = load_settings(config)
    assert glance.open_sqlite(settings.database) is None  # no store yet
    assert run_cli("--config", config, "db", "upgrade").returncode == 0
    assert glance.open_sqlite(settings.database) is not None
    engine = store.make_engine(settings.database)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0010'"))
    engine.dispose()
    assert glance.open_sqlite(settings.database) is None  # not the newest: status migrates first
