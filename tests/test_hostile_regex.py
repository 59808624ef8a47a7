"""Catastrophic regexes: a rule that backtracks exponentially in Python's engine, and the
abstract that sets it off, cannot hold up anyone's mail (RE2 matches in linear time); a
pattern RE2 cannot run is a configuration error. Before, one such rule hung the process:
no email for anyone, /healthz timed out, SIGTERM was ignored."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from tests.helpers import local_config, run_cli, write_config

EVIL_ABSTRACT = (
    "We study strings that make regular expressions backtrack. Our running example is "
    + "a" * 40
    + "! It takes a backtracking engine longer than the age of the universe. We show how to avoid it."
)
DIGEST = f"""Daily Papers

Mar 14

Backtracking Regular Expressions Considered Harmful

{EVIL_ABSTRACT}

A Model of Everything Else

We present a model. It models everything else, and we evaluate the model on many tasks in depth.
"""

PATTERNS = ["(a+)+$", "(a|aa)+$", "(a*)*b", "(.*a){30}x", "(x+x+)+y"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("where", ["query", "keywords", "exclude"])
def test_a_catastrophic_regex_delays_no_one(tmp_path: Path, pattern: str, where: str) -> None:
    rule = {
        "query": f"query: '/{pattern}/'",
        "keywords": f"keywords: ['/{pattern}/']",
        "exclude": f"keywords: [regular]\n    exclude: ['/{pattern}/']",
    }[where]
    config = local_config(
        tmp_path,
        f"  - email: attacker@example.org\n    {rule}\n"
        "  - email: reader@example.org\n    keywords: [model]\n",
    )
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "digest.txt").write_text(DIGEST)
    done = run_cli("--config", config, "run", "--once", timeout=60)  # it hung for good before
    assert done.returncode == 0, done.stderr
    to = sorted(str(m["To"]) for m in mailbox.Maildir(tmp_path / "mail", create=False))
    assert "reader@example.org" in to


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        (r"(a)\1", "invalid escape sequence"),
        ("foo(?=bar)", "invalid perl operator"),
        ("(?<=a)b", "invalid perl"),
    ],
)
def test_a_regex_re2_cannot_run_is_a_config_error(tmp_path: Path, pattern: str, said: str) -> None:
    config = write_config(
        tmp_path / "paperboy.yaml",
        f"subscribers:\n  - email: a@example.org\n    keywords: ['/{pattern}/']\n",
    )
    done = run_cli("--config", config, "check")
    assert done.returncode == 2
    assert f"{config}:3: subscribers[0] (a@example.org).keywords" in done.stderr and said in done.stderr
    assert "RE2" in done.stderr and "Error parsing" not in done.stderr  # no stray log of the engine's
