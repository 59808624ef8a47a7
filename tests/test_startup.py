"""What each command imports: the ones that neither schedule, serve nor send start
without the scheduler, the web server, the SMTP client, scikit-learn while no reader
has rated, or Alembic on an up-to-date store; the sending process without the
templates, the database or the rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, copy_digest, local_config, run_cli

HEAVY = ("starlette", "uvicorn", "apscheduler", "aiosmtplib", "alembic", "sklearn", "scipy", "numpy")
PROBE = """
import json, sys
from service.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m.partition(".")[0] for m in sys.modules)}))
"""


def imported(*args: str | Path) -> tuple[int, set[str]]:
    """Run ``paperboy ARGS`` in a fresh interpreter; its exit code and the top-level modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["code"], set(answer["modules"])


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A store with papers and a pending delivery, at the newest schema."""
    config = local_config(tmp_path, "  - email: alice@example.org\n    keywords: [model]\n")
    copy_digest("digest-a.txt", tmp_path / "inbox")
    done = run_cli("--config", config, "ingest", tmp_path / "inbox" / "digest-a.txt")
    assert done.returncode == 0, done.stderr
    return config


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["check"],
        ["explain", "alice@example.org", "model"],
        ["preview", "alice@example.org"],
    ],
    ids=" ".join,
)
def test_commands_that_neither_schedule_serve_nor_send_import_none_of_that(
    demo: Path, command: list[str]
) -> None:
    code, modules = imported("--config", demo, *command)
    assert code in (0, 2)  # explain may find several papers; what matters is what it imported
    assert modules.isdisjoint(HEAVY), sorted(modules & set(HEAVY))


def test_the_sending_process_imports_neither_templates_database_nor_rules() -> None:
    probe = (
        "import sys, service.courier, service.smtp;"
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'jinja2', 'sqlalchemy', 'sqlmodel'})"
        " + sorted(m for m in sys.modules if m.startswith('service.rules')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command", [["status"], ["status", "--json", "--subscribers"], ["check"]], ids=" ".join
)
def test_status_and_check_read_a_sqlite_store_without_sqlalchemy(demo: Path, command: list[str]) -> None:
    """Half a second of CPU saved: service.glance reads the store through sqlite3."""
    liking = demo.read_text().replace(
        "keywords: [model]", "keywords: [model]\n    like: [a paper nobody wrote]"
    )
    demo.write_text(liking)
    code, modules = imported("--config", demo, *command)
    assert code == 0
    assert modules.isdisjoint({"sqlalchemy", "sqlmodel", "alembic"}), sorted(modules)


def test_a_quiet_run_weighs_no_suggestion_and_imports_no_learning(tmp_path: Path) -> None:
    """A reader with ``like`` and ``suggest``: the first run fits their taste and weighs the
    new papers; a run with nothing new has nothing to weigh and loads none of numpy, SciPy
    or scikit-learn (most of a second)."""
    config = local_config(
        tmp_path,
        "  - email: alice@example.org\n    keywords: [model]\n"
        "    like: [Novel Self-Training Framework for Semantic]\n    suggest: 3\n",
    )
    copy_digest("digest-a.txt", tmp_path / "inbox")
    code, modules = imported("--config", config, "run", "--once")
    assert code == 0 and {"sklearn", "numpy"} <= modules  # the taste was fitted, suggestions weighed
    code, modules = imported("--config", config, "run", "--once")
    assert code == 0
    assert modules.isdisjoint({"sklearn", "scipy", "numpy"}), sorted(modules & {"sklearn", "scipy", "numpy"})
