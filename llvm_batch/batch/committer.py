"""Committing finished rows to the checkpoint: whole chunks at once, stragglers every
``flush_interval``, and room for new chunks as old ones are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .checkpoint import Checkpoint
from .chunk import Chunk
from .summary import EXIT_INCOMPLETE

MAX_OPEN_CHUNKS = 32


class Committer:
    """The open chunks of a run and the task that commits their finished rows."""

    def __init__(
        self,
        flush_interval: float,
        clock: Callable[[], float],
        stop: Callable[[int, str], None],
        stopped: Callable[[], bool],
    ) -> None:
        self.open: dict[int, Chunk] = {}
        self.wanted = asyncio.Event()  # set: commit now (a chunk completed, the run stops)
        self._flush_interval = flush_interval
        self._clock = clock
        self._stop = stop
        self._stopped = stopped
        self._finished = asyncio.Event()
        self._room = asyncio.Condition()

    async def wait_for_room(self) -> None:
        """Wait until fewer than :data:`MAX_OPEN_CHUNKS` chunks are open (or the run stops)."""
        async with self._room:
            await self._room.wait_for(lambda: len(self.open) < MAX_OPEN_CHUNKS or self._stopped())

    def finish(self) -> None:
        """Commit what is left, then end :meth:`run`."""
        self._finished.set()
        self.wanted.set()

    async def run(self, checkpoint: Checkpoint) -> None:
        """Commit until :meth:`finish`; a failed write stops the run (exit 3, resumable)."""
        while True:
            try:
                await asyncio.wait_for(self.wanted.wait(), timeout=self._flush_interval / 2)
            except asyncio.TimeoutError:
                pass
            self.wanted.clear()
            final = self._finished.is_set()
            await self._commit(checkpoint, force=final)
            if final:
                return
            if self._stopped():
                # Rows of open chunks were cancelled: wake a dispatch waiting for chunk room.
                async with self._room:
                    self._room.notify_all()

    async def _commit(self, checkpoint: Checkpoint, force: bool) -> None:
        now = self._clock()
        for index in sorted(self.open):
            chunk = self.open[index]
            due = chunk.first_unflushed_at is not None and (
                chunk.complete or force or now - chunk.first_unflushed_at >= self._flush_interval
            )
            if due:
                table = chunk.take_unflushed()
                try:
                    await asyncio.to_thread(checkpoint.commit, index, table)
                except OSError as exc:  # disk full...: stop; these rows run again on resume
                    why = exc.strerror or str(exc) or type(exc).__name__
                    self._stop(
                        EXIT_INCOMPLETE,
                        f"can't write the checkpoint in {checkpoint.directory!r}: {why}",
                    )
            if chunk.complete and not chunk.unflushed:
                del self.open[index]
                async with self._room:
                    self._room.notify_all()
