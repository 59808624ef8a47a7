"""The sent book: accepted emails on their way into ``sent_marks``, committed in groups.

A delivery run's event loop hands each email the server accepted to a
:class:`SentBook` and goes on sending; one thread commits whatever has gathered
since its last commit as one insert (a group commit), and every
:data:`FOLD_EVERY` marks folds them into the outbox rows. Apart from the
delivery run (:mod:`service.delivery`) so that each reads as one idea.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from .message import Mail

FOLD_EVERY = 50  # sent marks folded into the outbox rows after this many (and at the end of a run)


class SentBook:
    """Accepted emails on their way into ``sent_marks``, committed in groups.

    The event loop hands each accepted email over and goes on sending; one
    thread commits whatever has gathered since its last commit as one insert
    (a group commit), so a mark waits for at most one commit before its own.
    A commit that fails stops the run: the next :meth:`add` or :meth:`drain`
    raises it.
    """

    def __init__(
        self,
        record: Callable[[list[tuple[Mail, datetime]]], None],
        fold: Callable[[], None],
        executor: ThreadPoolExecutor,
    ):
        self.record, self.fold, self.executor = record, fold, executor
        self.unfolded = 0  # marks committed since the last fold
        self.waiting: list[tuple[Mail, datetime]] = []
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def add(self, mail: Mail, at: datetime) -> None:
        if self.error is not None:
            raise self.error
        self.waiting.append((mail, at))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._commit())

    async def _commit(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting and self.error is None:
            batch, self.waiting = self.waiting, []
            try:
                await loop.run_in_executor(self.executor, self._record, batch)
            except Exception as exc:  # kept, and raised to the run by add() or drain()
                self.error = exc

    def _record(self, batch: list[tuple[Mail, datetime]]) -> None:
        """(On the executor's thread.) Commit the marks; every FOLD_EVERY of them, fold."""
        self.record(batch)
        self.unfolded += len(batch)
        if self.unfolded >= FOLD_EVERY:
            self.fold()
            self.unfolded = 0

    async def drain(self) -> None:
        """Wait until every accepted email so far is committed (raises what a commit raised)."""
        while self.task is not None and not self.task.done():
            await self.task
        if self.error is not None:
            raise self.error
