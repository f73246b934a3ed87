"""An elastic pool of row workers: one per concurrency slot, plus stand-ins for sleepers.

With exactly one worker per slot a row never queues for a slot (the cheap path, taken by
almost every row). A row waiting out its backoff holds no slot, though, so its worker would
leave a slot idle and a few failing rows would slow the whole run down: the client's sleep
(:meth:`WorkerPool.sleep`) starts a stand-in worker for the time of the sleep, and when the
sleeper wakes, the next worker to finish a row retires. The pool never grows past ``limit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


def most_workers(ceiling: int) -> int:
    """The pool's limit for ``ceiling`` slots: one worker per slot, plus stand-ins for rows
    waiting out a backoff; also the client's queue size, so that no worker is refused."""
    return ceiling * 4 + 32


class WorkerPool:
    """Runs ``body(pool)`` coroutines: each loops over rows and calls :meth:`retire` between."""

    def __init__(
        self,
        body: Callable[[WorkerPool], Coroutine[Any, Any, None]],
        *,
        size: int,
        limit: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not 1 <= size <= limit:
            raise ValueError("need 1 <= size <= limit")
        self.size = size
        self.limit = limit
        self.tasks: set[asyncio.Task[None]] = set()
        self.most_seen = 0
        self._body = body
        self._sleep = sleep
        self._surplus = 0  # workers to retire: the sleepers they stood in for are back
        self._closed = False
        self._on_failure = on_failure

    def start(self) -> None:
        for _ in range(self.size):
            self._add()

    def _add(self) -> bool:
        if self._closed or len(self.tasks) >= self.limit:
            return False
        task = asyncio.create_task(self._body(self))
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        self.most_seen = max(self.most_seen, len(self.tasks))
        return True

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self._on_failure is not None and not task.cancelled():
            failure = task.exception()
            if failure is not None:
                # Said at once, not at join: the other workers would go on sending rows
                # whose chunk can never complete.
                self._on_failure(failure)

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds while a stand-in worker keeps this one's slot busy."""
        stand_in = self._add()
        try:
            await self._sleep(delay)
        finally:
            if stand_in:
                self._surplus += 1

    def retire(self) -> bool:
        """True when the calling worker should stop now (it is one too many)."""
        if self._surplus:
            self._surplus -= 1
            return True
        return False

    def cancel(self) -> None:
        """Cancel every worker; none start after this."""
        self._closed = True
        for task in list(self.tasks):
            task.cancel()

    async def join(self) -> None:
        """Wait until every worker, stand-ins started meanwhile included, has ended.

        A worker that failed (a bug, not a failed row: those are results) fails the join,
        unless ``on_failure`` was told of it when it happened.
        """
        failure: BaseException | None = None
        while self.tasks:
            for outcome in await asyncio.gather(*self.tasks, return_exceptions=True):
                if isinstance(outcome, Exception) and failure is None:
                    failure = outcome
        self._closed = True
        if failure is not None and self._on_failure is None:
            raise failure
