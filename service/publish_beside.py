"""The feeds written by a second process while the delivery run sends.

After a digest nearly every reader's feed changes: at 10,000 readers with
``feeds.mirror: all``, 20,000 files rendered and written, about 15 s of one
core, which the cycle used to spend after the last email was sent. A delivery
run spends its time composing and waiting on the SMTP server, and leaves a
core half idle. So when the configuration has ``BESIDE_READERS`` readers or
more, every feed is mirrored and the feeds changed (:func:`publish.current`),
the cycle starts ``python -m service.publish_beside`` before it sends: the
same :func:`~service.publish.publish`, on the same store, in a process of
its own, and waits for it after the last email.

The feeds are the same as if they were written after the run: what a feed
shows (the papers, each reader's matches, each topic's entries) is fixed once
matching is done, and sending only moves deliveries from state to state,
which no feed shows. The cycle still calls :func:`~service.publish.publish`
after the run: it finds the folder's stamp current and reads nothing; or, if
the second process failed or something changed meanwhile (a reader
unsubscribed), renders what is left, as it always did.

The parent sends the store's URL (password included: through the pipe, never
on a command line), the settings and the time of the cycle as one pickle on
the child's stdin; the child logs to the same stderr and prints how many feed
files changed. It ignores SIGINT and SIGTERM, like the courier: the parent
waits for it, so a stopped service leaves no feed half written.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from datetime import datetime

from sqlalchemy import Engine

from . import children, store
from .log import event, setup
from .publish import current, publish
from .settings import Settings

log = logging.getLogger("paperboy.feeds")

BESIDE_READERS = 1000  # readers from which the feeds are written beside the delivery run
NICE = 10  # the second process's niceness, added to its parent's


class Beside:
    """The feeds being written by a second process (see the module's text)."""

    def __init__(self, engine: Engine, settings: Settings, *, at: datetime) -> None:
        self.process = subprocess.Popen(
            children.command("service.publish_beside"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=children.environment(),
        )
        assert self.process.stdin is not None
        url = engine.url.render_as_string(hide_password=False)
        try:
            with self.process.stdin as pipe:
                pickle.dump((url, settings, at, logging.getLogger().level), pipe)
        except BaseException:
            self.process.kill()
            self.process.wait()
            assert self.process.stdout is not None
            self.process.stdout.close()
            raise

    def finish(self) -> int:
        """Wait for the second process; how many feed files it changed (0 when it failed: the
        cycle's own :func:`~service.publish.publish` then writes what it left)."""
        assert self.process.stdout is not None
        said = self.process.stdout.read().decode().strip()
        self.process.stdout.close()
        code = self.process.wait()
        if code == 0 and said.isdigit():
            return int(said)
        _fell_back(exit=code)
        return 0


def start(engine: Engine, settings: Settings, *, at: datetime) -> Beside | None:
    """The feeds written beside the delivery run, when there are many to write; None when the
    cycle writes them itself after the run (few readers, a shared mirror, nothing changed)."""
    cfg = settings.feeds
    if cfg.mirror != "all" or len(settings.subscribers) < BESIDE_READERS or current(engine, settings):
        return None
    try:
        return Beside(engine, settings, at=at)
    except Exception as exc:
        _fell_back(reason=f"{type(exc).__name__}: {exc}")
        return None


def _fell_back(**why: object) -> None:
    event(
        log,
        "feeds.beside_failed",
        level=logging.WARNING,
        **why,
        hint="the feeds are written after the delivery run instead",
    )


def _child() -> int:
    children.leave_signals_to_parent()
    os.nice(NICE)  # the emails first: the feeds take the CPU the delivery run leaves
    url, settings, at, level = pickle.load(sys.stdin.buffer)
    setup()
    logging.getLogger().setLevel(level)
    engine = store.make_engine(url)
    try:
        changed = publish(engine, settings, at=at)
    except Exception as exc:
        event(log, "feeds.failed", level=logging.ERROR, reason=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        engine.dispose()
    print(changed)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
