"""How paperboy starts its child processes: the courier (SMTP sessions), the parser of a big
digest, the feeds written beside a delivery run.

Each runs ``python -m service.<module>`` with this interpreter, and must import this same
code whatever the directory paperboy was started from. ``python -m`` puts the current
directory first on the module path, so an operator's folder that holds a ``service``
package of its own would be imported instead, and the child would die. So the child runs
with ``-P`` (Python 3.11+: no such directory first), and the folder that holds this
``service`` package is put first on its ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

CODE = str(Path(__file__).resolve().parent.parent)  # the folder that holds this package


def command(module: str) -> list[str]:
    """The command line of a child running ``module`` (``service.courier``...)."""
    return [sys.executable, "-P", "-m", module]


def leave_signals_to_parent() -> None:
    """In a child: ignore SIGINT and SIGTERM. Ctrl-C reaches the whole process group and
    systemd signals every process of a service; the parent handles those (a stopping service
    finishes its step, then tells its children or closes their pipes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def environment() -> dict[str, str]:
    """The child's environment: this one, this code first on its module path."""
    path = os.pathsep.join(filter(None, [CODE, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}
