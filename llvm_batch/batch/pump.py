"""Rows through the client: chunks read -> rows rendered -> workers send -> results counted.

Workers (one per slot, plus stand-ins for rows in backoff) pull rows from a feed with
backpressure, so there is no task per row; finished chunks are committed by the
:class:`Committer`; a run that stops drops the rows in flight (they run again on resume).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pyarrow as pa

from ..client import AsyncLLVMClient
from ..errors import InputError
from . import columns as cols
from .checkpoint import Checkpoint
from .chunk import Chunk
from .committer import Committer
from .dispatch import Dispatcher
from .feed import RowFeed, rows_ahead
from .options import BatchOptions
from .plan import RunPlan
from .progress import Progress
from .prompts import Request
from .summary import EXIT_INCOMPLETE, RunSummary
from .workers import WorkerPool, most_workers

logger = logging.getLogger(__name__)


class RowPump:
    """The sending part of one run: its client, dispatcher, workers, feed and commits."""

    def __init__(
        self,
        plan: RunPlan,
        opts: BatchOptions,
        summary: RunSummary,
        clock: Callable[[], float],
    ) -> None:
        self.plan = plan
        self.opts = opts
        self.summary = summary
        self.errors: Counter[str] = Counter()
        self._clock = clock
        ceiling = opts.client.limits.ceiling
        self.pool = WorkerPool(
            self._worker,
            size=ceiling,
            limit=most_workers(ceiling),
            on_failure=lambda exc: self._died("a row worker", exc),
        )
        self.client = AsyncLLVMClient(config=opts.client, sleep=self.pool.sleep)
        self.dispatcher = Dispatcher(
            self.client,
            plan.model,
            priority=opts.priority,
            max_outage=opts.max_outage,
            on_stop=self._cancel_rows,
            clock=clock,
        )
        self.commits = Committer(
            opts.flush_interval,
            clock,
            stop=self.dispatcher.stop,
            stopped=lambda: self.dispatcher.stop_code is not None,
        )
        self.rows: RowFeed[tuple[Chunk, int, Request]] = RowFeed(low=rows_ahead(ceiling))
        self.progress: Progress | None = None  # shown once rows go out

    async def run(self, checkpoint: Checkpoint) -> None:
        """Send every row not in ``checkpoint`` yet; return when all are in or the run stopped."""
        self.progress = Progress(
            self.plan.source.num_rows(),
            mode=Progress.choose_mode(self.opts.progress, self.opts.quiet),
            interval=self.opts.progress_interval,
            status=self._status,
        )
        self.progress.advance(0)
        if self.summary.resumed:
            self.progress.advance(self.summary.resumed)
        self.pool.start()
        committer = asyncio.create_task(
            self._watched(self.commits.run(checkpoint), "the checkpoint writer")
        )
        try:
            await self._dispatch(checkpoint)
            if self.dispatcher.stop_code is None:
                self.rows.close()
            await self.pool.join()
        finally:
            self.commits.finish()
            await committer
            self.progress.close()

    async def _watched(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run a background task; if it dies, the run stops at once (exit 3) saying why."""
        try:
            await work
        except Exception as exc:  # a bug, not a row's failure: those are results
            self._died(what, exc)

    def _died(self, what: str, exc: BaseException) -> None:
        logger.debug("%s failed", what, exc_info=exc)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        self.dispatcher.stop(EXIT_INCOMPLETE, f"{what} failed ({cause}); resume once fixed")

    async def _dispatch(self, checkpoint: Checkpoint) -> None:
        chunk_size = checkpoint.chunk_size
        chunks = self.plan.source.chunks(chunk_size)
        self.summary.rows = 0
        while self.dispatcher.stop_code is None:
            try:
                item = await asyncio.to_thread(next, chunks, None)
            except InputError as exc:  # the file changed under the run: rows were sent
                reason = f"{exc}; the rows done so far are kept: fix the input and run again"
                self.dispatcher.stop(EXIT_INCOMPLETE, reason)
                return
            if item is None:
                break
            index, batch = item
            start = index * chunk_size
            self.summary.rows += batch.num_rows
            done = {r - start for r in checkpoint.rows_done(index)}
            if len(done) == batch.num_rows:
                continue
            await self.commits.wait_for_room()
            chunk = Chunk(
                index,
                start,
                batch.select(self.plan.input_columns),
                already_done=len(done),
                prefix=self.opts.prefix,
            )
            self.commits.open[index] = chunk
            await self._submit_chunk(chunk, batch, done)

    async def _submit_chunk(self, chunk: Chunk, batch: pa.RecordBatch, done: set[int]) -> None:
        kept = cols.kept_results(batch, self.opts.prefix) if self.opts.retry_errors else {}
        sendable = []
        for offset, request in enumerate(self.plan.spec.render(batch)):
            if offset in done:
                continue
            if offset in kept:
                self._finish(chunk, offset, kept[offset], kept=True)
            elif isinstance(request, str):
                self._finish(chunk, offset, cols.skipped(request, self.plan.model))
            else:
                sendable.append((chunk, offset, request))
        self.rows.put_many(sendable)
        await self.rows.wait_for_room()

    async def _worker(self, pool: WorkerPool) -> None:
        rows, send, prefix = self.rows, self.dispatcher.send, self.plan.key_prefix
        while (item := await rows.get()) is not None:
            chunk, offset, request = item
            result = await send(request, f"{prefix}-{chunk.start + offset}")
            if result is None:
                # The run stopped. Said here too, not only by cancelling: on Python 3.11
                # asyncio.wait_for can swallow a cancel that lands as its wait ends.
                return
            self._finish(chunk, offset, result)
            if pool.retire():
                return

    def _cancel_rows(self) -> None:
        """The run stops: drop rows in flight and queued (they run again on resume)."""
        self.pool.cancel()
        self.rows.clear()
        self.rows.close()  # a worker that missed its cancel finds no row, not a wait
        self.commits.wanted.set()

    def _finish(
        self, chunk: Chunk, offset: int, result: cols.RowResult, kept: bool = False
    ) -> None:
        chunk.finish(offset, result, self._clock())
        self.summary.count(result, self.errors, kept=kept)
        if self.progress is not None:
            self.progress.advance()
        if chunk.complete:
            self.commits.wanted.set()

    def _status(self) -> dict[str, Any]:
        return {
            "ok": self.summary.ok,
            "error": self.summary.error,
            "retries": self.client.retry_count,
            "limit": f"{self.client.concurrency_limit}/{self.opts.client.limits.ceiling}",
            "breaker": self.client.breaker_state,
        }
