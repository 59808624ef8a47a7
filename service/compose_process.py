"""Composing a big delivery run's emails in a second process.

Composing is most of a delivery run's CPU (about 3.5 ms for a 30-paper email:
the templates, marking each reader's terms, inlining the CSS), and the run's
own process has the claims, the records and the hand-over to the sending
process (:mod:`service.courier`) to do as well, all under one interpreter
lock. So once a run has more than one chunk of subscribers due, the chunks
after the first are composed by a :class:`ProcessComposer`: one child process
(``spawn``, a fresh interpreter: forking a process with threads is not safe)
holding its own :class:`~service.compose.Composer` for the whole run. It
reads the store itself (the same short read per chunk) and hands back the
finished emails. The first chunk is composed in the run's own process while
the child starts (about half a second of imports), so a small run never waits
for it, and a run of one chunk never starts it.

An email that cannot be made is reported back and failed by the run's own
process, as :class:`~service.compose.Composer` does in-process. The child
ignores SIGINT and SIGTERM: the run decides when to stop, and shuts the child
down with it; if the run's process dies, the child's pipe closes and it ends.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from . import store
from .compose import Composer
from .message import Mail
from .render import Renderer
from .settings import Settings
from .signing import Signer

Broken = tuple[list[store.OutboxRow], str, str]  # a subscriber's rows, their address, the reason

_composer: Composer | None = None  # the child's, for the whole run
_broken: list[Broken] = []


def _start(settings: Settings, database: str, templates: Path) -> None:
    """(In the child.) The composer of this run."""
    global _composer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    renderer = Renderer(templates, sign=Signer.of(settings.email.dkim))
    _composer = Composer(store.make_engine(database), renderer, settings, broken=lambda *b: _broken.append(b))


def _compose(rows: dict[int, list[store.OutboxRow]], at: datetime) -> tuple[list[Mail], list[Broken]]:
    """(In the child.) One chunk's emails, and the subscribers whose email could not be made."""
    assert _composer is not None, "the child was started without its composer"
    _broken.clear()
    return _composer(rows, at=at), list(_broken)


def shareable(engine: Engine) -> bool:
    """Whether another process can open ``engine``'s store (not an in-memory SQLite)."""
    return engine.url.get_backend_name() != "sqlite" or engine.url.database not in (None, "", ":memory:")


class ProcessComposer:
    """:class:`~service.compose.Composer`'s call, made in a child process (started at once,
    in the background). Call :meth:`close` when the run ends."""

    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        settings: Settings,
        *,
        broken: Callable[[list[store.OutboxRow], str, str], None],
    ) -> None:
        self.engine, self.renderer, self.settings, self.broken = engine, renderer, settings, broken
        database = engine.url.render_as_string(hide_password=False)
        self._pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(settings, database, renderer.templates),
        )
        self._pool.submit(int)  # start the child now: it boots while the first chunk composes here

    def __call__(self, rows: dict[int, list[store.OutboxRow]], *, at: datetime) -> list[Mail]:
        mails, broken = self._pool.submit(_compose, rows, at).result()
        for group, address, reason in broken:
            self.broken(group, address, reason)
        return mails

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
