"""Hostile configuration files, through `paperboy check` and a running `paperboy run`: each
is refused in bounded time with file and line, and the running service keeps its last good
configuration, keeps polling and still stops on SIGTERM. Before, the alias bomb hung check
and stopped the service's polling for good; deep nesting ended in RecursionError."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, Service, run_cli, write_config


def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes whose aliases expand to hundreds of millions of strings."""
    text = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


HOSTILE = {
    "alias bomb": (alias_bomb(), "its aliases expand the configuration to"),
    "alias bomb under a real key": (
        "topics:\n  t:\n    keywords: &k [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"    x{i}: &k{i} [" + ",".join([f"*k{i - 1}" if i else "*k"] * 10) + "]\n" for i in range(8)
        ),
        "its aliases expand the configuration to",
    ),
    "flow nested 3000 deep": ("subscribers: " + "[" * 3000 + "]" * 3000 + "\n", "nested 3000 levels deep"),
    "sequences nested 3000 deep": ("subscribers:\n  " + "- " * 3000 + "x\n", "levels deep"),
    "mappings nested 1000 deep": (
        "subscribers:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1000)),
        "levels deep; at most",
    ),
    "a query of 5000 parentheses": (
        'subscribers:\n  - email: a@example.org\n    query: "' + "(" * 5000 + "a" + ")" * 5000 + '"\n',
        "nested more than 64 deep",
    ),
    "NOT 5000 times": (
        'subscribers:\n  - email: a@example.org\n    query: "' + "NOT " * 5000 + 'a"\n',
        "nested more than 64 deep",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_check_refuses_a_hostile_file_with_its_line(tmp_path: Path, case: str) -> None:
    text, said = HOSTILE[case]
    config = write_config(tmp_path / "paperboy.yaml", text)
    done = run_cli("--config", config, "check", timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{config}:" in done.stderr and said in done.stderr, done.stderr[:500]
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr


def test_a_running_service_rejects_a_hostile_edit_and_keeps_going(tmp_path: Path) -> None:
    good = f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
schedule: {{poll: 1s}}
email: {{maildir: {tmp_path}/mail}}
feeds: {{dir: {tmp_path}/feeds}}
http: {{enabled: false}}
subscribers:
  - email: alice@example.org
    keywords: [model]
"""
    config = write_config(tmp_path / "paperboy.yaml", good)
    (tmp_path / "inbox").mkdir()
    with Service(config) as service:
        service.wait_for("service.started")
        config.write_text(good + alias_bomb())  # the hostile edit
        rejected = service.wait_for("config.rejected")
        assert "its aliases expand the configuration to" in service.log[rejected]
        shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")  # still polling, on the good config
        service.wait_for("ingest.file", after=rejected)
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=60) == 0
    assert "service.stopped" in "".join(service.log)
