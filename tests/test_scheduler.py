"""The service's scheduler in this process: an edited configuration loads on a thread of its
own while the polls go on with the last good one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from service import scheduler, store
from service.cycle import App
from service.settings import Settings, load_settings
from tests.helpers import local_config


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for an event (the timeout only bounds a stuck test; it is no claim about speed)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_edited_configuration_loads_while_the_polls_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = local_config(
        tmp_path,
        "  - email: alice@example.org\n    keywords: [model]\n",
        extra="schedule: {poll: 1s}\nhttp: {enabled: false}\n",
    )
    loading, release = threading.Event(), threading.Event()
    real = scheduler.load_settings

    def slow_load(path: Path) -> Settings:  # a configuration that takes long to load
        loading.set()
        assert release.wait(120)
        return real(path)

    monkeypatch.setattr(scheduler, "load_settings", slow_load)
    service = scheduler.Service(
        config, load_settings(config), lambda s, stop: App(s, stop=stop, progress=False)
    )
    service.app.prepare_store()  # the tables exist before the first look at them
    runner = threading.Thread(target=service.run, kwargs={"install_signals": False})
    runner.start()

    def polls() -> int:
        with store.reading(service.app.engine) as session:
            return int(session.execute(text("SELECT count(*) FROM job_runs WHERE job = 'poll'")).scalar_one())

    try:
        wait_until(lambda: polls() >= 1)
        config.write_text(config.read_text().replace("[model]", "[nerf, gaussian]"))
        assert loading.wait(60)  # the edit is being loaded (and held there)
        during = polls()
        wait_until(lambda: polls() >= during + 2)  # polls go on meanwhile, on the old configuration
        assert service.app.settings.subscribers[0].keywords == ["model"]
        release.set()
        wait_until(lambda: service.app.settings.subscribers[0].keywords == ["nerf", "gaussian"])
        after = polls()
        wait_until(lambda: polls() >= after + 1)  # and on the new one
    finally:
        release.set()
        service.stop.set()
        runner.join(timeout=60)
    assert not runner.is_alive()
