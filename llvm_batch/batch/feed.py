"""The rows waiting for a worker: filled a chunk at a time, taken one at a time.

An ``asyncio.Queue`` bounded to a few rows wakes the filling task for every row taken; this
feed wakes it only when it runs low, and wakes workers only when it was empty, so a row costs
a ``popleft`` in the usual case.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def rows_ahead(ceiling: int) -> int:
    """How many rows to keep ready for ``ceiling`` slots: every slot busy and one row waiting
    behind each, plus a margin; more would only hold memory."""
    return ceiling * 2 + 16


class RowFeed(Generic[T]):
    """A FIFO of rows with backpressure: :meth:`wait_for_room` holds the filler at ``low``."""

    def __init__(self, low: int) -> None:
        if low < 1:
            raise ValueError("low must be at least 1")
        self.low = low
        self._rows: deque[T] = deque()
        self._ready = asyncio.Event()  # rows (or the end) are there for waiting workers
        self._room = asyncio.Event()  # fewer than ``low`` rows: the filler may add more
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    def put_many(self, rows: Iterable[T]) -> None:
        self._rows.extend(rows)
        if self._rows:
            self._ready.set()
            if len(self._rows) >= self.low:
                self._room.clear()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``low`` rows wait (or the feed was cleared or closed)."""
        await self._room.wait()

    async def get(self) -> T | None:
        """The next row, waiting for one if needed; None once closed and drained."""
        rows = self._rows
        while not rows:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        row = rows.popleft()
        if len(rows) < self.low:
            self._room.set()
        return row

    def close(self) -> None:
        """No more rows will come: workers drain what is left, then get None."""
        self._closed = True
        self._ready.set()
        self._room.set()

    def clear(self) -> None:
        """Drop every waiting row (the run stops; they run again on resume)."""
        self._rows.clear()
        self._room.set()
