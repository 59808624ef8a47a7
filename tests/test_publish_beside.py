"""With many readers the feeds are written by a second process while the delivery run sends:
the same files as when the cycle writes them after the run, and when that process fails, the
cycle writes them itself."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from service import feeds, publish_beside, store
from service.cycle import App
from service.settings import parse_settings
from tests.helpers import FIXED_NOW, FIXTURES, children_die, local_yaml

PEOPLE = (
    "  - email: alice@example.org\n    keywords: [model]\n"
    "  - email: bob@example.org\n    keywords: [gaussian splatting]\n"
    "  - email: carol@example.org\n    keywords: [diffusion]\n"
)


def app_in(folder: Path, *, mirror: str = "all") -> App:
    (folder / "inbox").mkdir(parents=True)
    shutil.copy(FIXTURES / "digest-a.txt", folder / "inbox")
    text = local_yaml(folder, PEOPLE).replace("feeds: {dir: ", f"feeds: {{mirror: {mirror}, dir: ")
    settings = parse_settings(text, source="paperboy.yaml", base=folder)
    return App(settings, clock=lambda: FIXED_NOW, progress=False)


def feed_files(app: App) -> dict[str, bytes]:
    """Every feed file, each reader's token (random per store) and what derives from it (the
    feed's id) replaced by their address."""
    folder = app.settings.feeds.dir
    with store.reading(app.engine) as session:
        tokens = {s.token: s.email for s in store.active_subscribers(session=session).values()}
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".atom", ".rss"):
            continue
        name, body = str(path.relative_to(folder)), path.read_bytes()
        for token, email in tokens.items():
            feed_id = feeds.entry_id("feed:" + feeds.subscriber_feed(token)).encode()
            body = body.replace(feed_id, email.encode())
            name, body = name.replace(token, email), body.replace(token.encode(), email.encode())
        out[name] = body
    return out


def test_the_feeds_written_beside_the_run_are_those_written_after_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    after = app_in(tmp_path / "after")
    assert publish_beside.start(after.engine, after.settings, at=FIXED_NOW) is None  # 3 readers: not worth it
    report_after = after.cycle()
    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    beside = app_in(tmp_path / "beside")
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    report = beside.cycle()
    child_said = capfd.readouterr().err
    assert "feeds.written rendered=4" in child_said  # the second process wrote them...
    assert not [r for r in caplog.records if r.msg == "feeds.written"]  # ...and the cycle found them current
    assert report.delivery.emails == report_after.delivery.emails == 3
    files = feed_files(beside)
    assert len(files) == 8 and files == feed_files(after)
    assert report.feeds_changed == report_after.feeds_changed == 8
    assert beside.write_feeds() == 0


def test_when_the_second_process_fails_the_cycle_writes_the_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    children_die(monkeypatch, tmp_path, "MemoryError")
    app = app_in(tmp_path / "store")
    caplog.set_level(logging.INFO)
    report = app.cycle()
    failed = [r for r in caplog.records if r.msg == "feeds.beside_failed"]
    assert len(failed) == 1 and failed[0].fields["exit"] == 3  # type: ignore[attr-defined]
    assert [r.fields["rendered"] for r in caplog.records if r.msg == "feeds.written"] == [4]  # type: ignore[attr-defined]
    assert report.feeds_changed == 8 and len(feed_files(app)) == 8
    assert report.delivery.emails == 3


def test_a_second_process_that_cannot_start_leaves_the_feeds_to_the_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[publish_beside.Beside] = []
    real = publish_beside.Beside.__init__

    def keep(self: publish_beside.Beside, *args: object, **kwargs: object) -> None:
        started.append(self)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    def unpicklable(*_: object) -> None:
        raise TypeError("cannot pickle '_thread.lock' object")

    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    monkeypatch.setattr(publish_beside.Beside, "__init__", keep)
    monkeypatch.setattr(publish_beside, "pickle", SimpleNamespace(dump=unpicklable))
    app = app_in(tmp_path / "store")
    report = app.cycle()
    failed = [r.fields for r in caplog.records if r.msg == "feeds.beside_failed"]  # type: ignore[attr-defined]
    assert failed and failed[0]["reason"] == "TypeError: cannot pickle '_thread.lock' object"
    assert len(started) == 1 and started[0].process.returncode is not None  # not left running
    assert report.feeds_changed == 8 and report.delivery.emails == 3


def test_the_second_process_starts_only_when_many_feeds_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    shared = app_in(tmp_path / "shared", mirror="shared")
    assert shared.settings.feeds.mirror == "shared"
    assert publish_beside.start(shared.engine, shared.settings, at=FIXED_NOW) is None  # few files to write

    app = app_in(tmp_path / "all")
    app.cycle(send=False)
    assert publish_beside.start(app.engine, app.settings, at=FIXED_NOW) is None  # nothing changed
    shutil.rmtree(app.settings.feeds.dir)  # a wiped folder: every feed to write again
    writing = publish_beside.start(app.engine, app.settings, at=FIXED_NOW)
    assert writing is not None
    assert writing.finish() == 8
    assert (app.settings.feeds.dir / "all.atom").is_file() and app.write_feeds() == 0


def test_the_second_process_writes_from_either_store(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It opens the store by the URL the cycle's engine has (the password through the pipe), and
    logs at the cycle's level."""
    monkeypatch.setattr(publish_beside, "BESIDE_READERS", 1)
    caplog.set_level(logging.INFO)
    local = app_in(tmp_path)
    app = App(local.settings, engine=store.make_engine(database_url), clock=lambda: FIXED_NOW, progress=False)
    capfd.readouterr()
    report = app.cycle()
    assert "feeds.written rendered=4" in capfd.readouterr().err
    assert report.feeds_changed == 8 and len(feed_files(app)) == 8
    app.engine.dispose()
