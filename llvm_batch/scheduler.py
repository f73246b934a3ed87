"""Admission to the server: priority order, bounded queue, adaptive concurrency, rate, pauses.

A request takes a slot with :meth:`Scheduler.slot` for one attempt and gives it back after,
telling the :class:`~llvm_batch.limiter.ConcurrencyLimiter` how the attempt went; backoff
sleeps happen outside the slot. At most ``limiter.slots`` slots are out at once. Waiters are
served HIGH before NORMAL before LOW, first come first served within a level.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from .attempt import Verdict
from .config import Limits, Priority
from .errors import QueueFullError
from .limiter import ConcurrencyLimiter

Sleep = Callable[[float], Awaitable[None]]


class Scheduler:
    """Grants at most ``limiter.slots`` slots at once, with at most ``limits.queue_size``
    waiting, and attempts at most ``limits.max_rps`` a second."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limiter = ConcurrencyLimiter(limits, clock)
        self.queue_size = limits.queue_size
        self.max_rps = limits.max_rps
        self._clock = clock
        self._sleep = sleep
        self._active = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiting = 0
        self._seq = itertools.count()
        self._paused_until = 0.0
        self._next_send_at = 0.0
        self.max_active_seen = 0

    @property
    def max_concurrent(self) -> int:
        """The ceiling of the limit."""
        return self.limiter.limits.ceiling

    @property
    def limit(self) -> int:
        """Slots granted at most right now (the adaptive limit)."""
        return self.limiter.slots

    @property
    def active(self) -> int:
        """Requests holding a slot (in flight)."""
        return self._active

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return self._waiting

    def pause_until(self, when: float) -> None:
        """Hold every new attempt until clock time ``when`` (a server asked us to back off)."""
        self._paused_until = max(self._paused_until, when)

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    @asynccontextmanager
    async def slot(self, priority: Priority, *, admitted: bool = False) -> AsyncIterator[None]:
        """Hold a concurrency slot for one attempt.

        ``admitted`` marks a retry of a request already accepted once: it is not refused for a
        full queue (the bound is on new work), but waits in line at its own priority.
        """
        await self.acquire(priority, admitted=admitted)
        try:
            yield
        finally:
            self.release()

    def try_acquire(self, priority: Priority) -> bool:
        """Take a slot at once if one is free, nobody waits and no pacing applies."""
        if (
            self._active < self.limiter.slots
            and not self._waiters
            and not self.max_rps
            and self._paused_until <= self._clock()
        ):
            self._grant()
            return True
        return False

    async def acquire(self, priority: Priority, *, admitted: bool = False) -> None:
        """Take a slot (waiting in priority order), then wait out pacing; pair with release."""
        await self._acquire(priority, admitted)
        if self.max_rps or self._paused_until > self._clock():
            try:
                await self._pace()
            except BaseException:
                self._release()
                raise

    def release(
        self, verdict: Verdict | None = None, *, sent_at: float = 0.0, elapsed: float = 0.0
    ) -> None:
        """Give back a slot taken with :meth:`acquire`, with how its attempt went (if it did).

        ``sent_at`` is when the attempt went out, ``elapsed`` how long it took (clock seconds).
        """
        if verdict is Verdict.SUCCESS:
            self.limiter.on_success(self._active - 1, elapsed)
        elif verdict is not None and verdict.full:
            self.limiter.on_overload(self._active - 1, sent_at)
        self._release()

    async def _acquire(self, priority: Priority, admitted: bool) -> None:
        if self._active < self.limiter.slots and not self._waiters:
            self._grant()
            return
        if not admitted and self._waiting >= self.queue_size:
            raise QueueFullError(
                f"the queue is full ({self.queue_size} requests waiting, "
                f"{self._active} in flight); raise queue_size or submit more slowly"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), fut))
        self._waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted just as we were cancelled: hand the slot on
            else:
                self._waiting -= 1
            raise

    def _grant(self) -> None:
        self._active += 1
        if self._active > self.max_active_seen:
            self.max_active_seen = self._active

    def _release(self) -> None:
        self._active -= 1
        while self._waiters and self._active < self.limiter.slots:
            *_, fut = heapq.heappop(self._waiters)
            if fut.done():
                continue
            self._waiting -= 1
            self._grant()
            fut.set_result(None)

    async def _pace(self) -> None:
        """Wait out the requests-per-second limit and any server-requested pause."""
        if self.max_rps:
            now = self._clock()
            send_at = max(now, self._next_send_at, self._paused_until)
            self._next_send_at = send_at + 1.0 / self.max_rps
            if send_at > now:
                await self._sleep(send_at - now)
        while (wait := self._paused_until - self._clock()) > 0:
            await self._sleep(wait)
