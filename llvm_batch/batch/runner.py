"""The batch runner: read chunks -> render prompts -> submit -> collect -> commit parts -> output.

Rows go to the client with backpressure (never more in hand than the client's queue takes),
rows refused by an open breaker are held and re-sent, finished rows are committed to the
checkpoint every few seconds, and the output appears atomically once every row is in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa

from ..client import AsyncLLVMClient
from ..errors import InputError
from ..options import ENV_DEFAULT_MODEL, Priority
from . import columns as cols
from .checkpoint import Checkpoint
from .chunk import Chunk
from .config import BatchOptions
from .dispatch import Dispatcher
from .feed import RowFeed
from .layout import plan_columns
from .progress import Progress
from .prompts import Request
from .signals import on_stop_signals
from .sinks import OutputWriter, default_output, read_output_metadata, write_output
from .sources import Source, detect_format, local_path
from .summary import (
    ALREADY_DONE,
    COMPLETE,
    DRY_RUN,
    EXIT_INCOMPLETE,
    INCOMPLETE,
    INTERRUPTED,
    RunSummary,
)
from .workers import WorkerPool

PREVIEW_ROWS = 5
MAX_OPEN_CHUNKS = 32


class BatchRun:
    """One run of a batch job; :meth:`run` does it and returns the :class:`RunSummary`."""

    def __init__(
        self,
        input_path: str,
        output_path: str | None,
        options: BatchOptions,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.opts = options
        self.input_path = str(input_path)
        self.output_path = str(output_path) if output_path else default_output(self.input_path)
        self.output_format = detect_format(self.output_path, options.output_format)
        self.spec = options.prompt_spec()
        self.priority = Priority.parse(options.priority)
        self._clock = clock
        self.limits = options.limits()
        self.summary = RunSummary(
            input=self.input_path,
            output=self.output_path,
            max_error_rate=options.max_error_rate,
            concurrency=self.limits.describe(),
            concurrency_ceiling=self.limits.ceiling,
        )
        self._errors: Counter[str] = Counter()
        self._finished = asyncio.Event()
        self._open: dict[int, Chunk] = {}
        self._commit_wanted = asyncio.Event()
        # Workers (one per slot, plus stand-ins for rows in backoff) pull rows from a feed
        # with backpressure: no task per row.
        ceiling = self.limits.ceiling
        self._pool = WorkerPool(self._worker, size=ceiling, limit=ceiling * 4 + 32)
        self._rows: RowFeed[tuple[Chunk, int, Request]] = RowFeed(low=self._window())

    # -- the whole run -------------------------------------------------------------------

    async def run(self) -> RunSummary:
        started = self._clock()
        source_path = self.output_path if self.opts.retry_errors else self.input_path
        if self.opts.retry_errors and not os.path.exists(local_path(source_path)):
            raise InputError(f"--retry-errors needs an existing output; {source_path!r} is missing")
        self.source = Source(
            source_path,
            self.output_format if self.opts.retry_errors else self.opts.input_format,
            string_columns=self.spec.text_columns(),
        )
        self._setup_columns()
        self.spec.check(self.source.schema)
        if self.opts.dry_run:
            return self._dry_run(started)
        done = self._already_done()
        if done is not None:
            return done
        self.model = self.opts.model or os.environ.get(ENV_DEFAULT_MODEL) or ""
        if not self.model:
            raise InputError(f"no model given: pass --model or set {ENV_DEFAULT_MODEL}")
        fingerprint = {
            "input": self.source.fingerprint(),
            "options": {**self.opts.shaping(), "model": self.model},
        }
        self._key_prefix = hashlib.sha256(
            json.dumps(fingerprint, sort_keys=True).encode()
        ).hexdigest()[:16]
        async with self._server() as base_url:
            client = AsyncLLVMClient(
                base_url=base_url,
                api_key=self.opts.api_key,
                default_model=self.model,
                max_concurrent_requests=self.limits,
                max_retries=self.opts.max_retries,
                retry_delay=self.opts.retry_delay,
                max_retry_delay=self.opts.longest_wait(),
                timeout=self.opts.timeout,
                max_rps=self.opts.max_rps,
                breaker=self.opts.breaker,
                queue_size=self._pool.limit,
                debug=self.opts.debug,
                sleep=self._pool.sleep,
            )
            async with client:
                self.client = client
                self.dispatcher = Dispatcher(
                    client,
                    self.model,
                    priority=self.priority,
                    max_outage=self.opts.max_outage,
                    on_stop=self._cancel_rows,
                    clock=self._clock,
                )
                if not await self.dispatcher.preflight():
                    return self._finish_summary(started)
                self.checkpoint = Checkpoint.open(
                    self.output_path,
                    fingerprint,
                    chunk_size=self.opts.chunk_size,
                    overwrite=self.opts.overwrite,
                )
                self.summary.resumed = self.checkpoint.committed_rows
                await self._process()
                self.summary.requests = client.request_count
                self.summary.retries = client.retry_count
                self.summary.concurrency_limit = client.concurrency_limit
        if self.dispatcher.stop_code is None:
            try:
                await asyncio.to_thread(self._finalize, fingerprint)
            except OSError as exc:  # disk full...: every row is committed, resumable
                self.dispatcher.stop(
                    EXIT_INCOMPLETE, f"can't write the output {self.output_path!r}: {_why(exc)}"
                )
            else:
                self.summary.status = COMPLETE
        return self._finish_summary(started)

    def _finish_summary(self, started: float) -> RunSummary:
        code = self.dispatcher.stop_code
        if code is not None:
            self.summary.status = INCOMPLETE if code == EXIT_INCOMPLETE else INTERRUPTED
            self.summary.stop_reason = self.dispatcher.stop_reason
        self.summary.finish(errors=self._errors, elapsed_s=self._clock() - started, exit_code=code)
        return self.summary

    @asynccontextmanager
    async def _server(self) -> AsyncIterator[str | None]:
        """The base URL to use: the bundled reference server's with ``local_server``."""
        if not self.opts.local_server:
            yield self.opts.base_url
            return
        from ..server import ReferenceServer

        async with ReferenceServer() as server:
            yield server.url

    def _window(self) -> int:
        """Rows queued for the workers: enough to keep every slot busy, no more."""
        return self.limits.ceiling * 2 + 16

    def _setup_columns(self) -> None:
        plan = plan_columns(
            self.source.schema, self.source.path, self.opts.prefix, self.opts.retry_errors
        )
        self.input_columns, self.input_schema, self.output_schema = plan

    # -- before sending ------------------------------------------------------------------

    def _dry_run(self, started: float) -> RunSummary:
        for _, batch in self.source.chunks(PREVIEW_ROWS):
            for request in self.spec.render(batch):
                self.summary.preview.append(
                    f"(skipped: {request})" if isinstance(request, str) else _shown(request)
                )
            break
        self.summary.rows = self.source.count_rows()
        self.summary.status = DRY_RUN
        self.summary.finish(errors=self._errors, elapsed_s=self._clock() - started, exit_code=0)
        return self.summary

    def _already_done(self) -> RunSummary | None:
        """A summary when the output already exists (finished earlier); an error if foreign."""
        out = local_path(self.output_path)
        if self.opts.overwrite or self.opts.retry_errors or not os.path.exists(out):
            return None
        if os.path.exists(out + ".llvm-staging"):
            return None
        meta = read_output_metadata(out) if self.output_format == "parquet" else None
        if meta is None or meta.get("input") != self.source.fingerprint():
            raise InputError(
                f"the output {self.output_path!r} already exists and is not a finished run of "
                "this input; pass --overwrite to replace it"
            )
        self.summary.status = ALREADY_DONE
        self.summary.rows = int(meta.get("rows", 0))
        self.summary.finish(errors=self._errors, elapsed_s=0.0, exit_code=0)
        return self.summary

    # -- dispatch ------------------------------------------------------------------------

    async def _process(self) -> None:
        total = self.source.num_rows()
        self.progress = Progress(
            total,
            mode=Progress.choose_mode(self.opts.progress, self.opts.quiet),
            interval=self.opts.progress_interval,
            status=self._status,
        )
        self.progress.advance(0)
        if self.summary.resumed:
            self.progress.advance(self.summary.resumed)
        self._pool.start()
        self._chunk_room = asyncio.Condition()
        committer = asyncio.create_task(self._committer())
        restore = on_stop_signals(self.dispatcher.stop)
        try:
            await self._dispatch()
            if self.dispatcher.stop_code is None:
                self._rows.close()
            await self._pool.join()
        finally:
            restore()
            self._finished.set()
            self._commit_wanted.set()
            await committer
            self.progress.close()

    async def _dispatch(self) -> None:
        chunk_size = self.checkpoint.chunk_size
        chunks = self.source.chunks(chunk_size)
        self.summary.rows = 0
        while self.dispatcher.stop_code is None:
            item = await asyncio.to_thread(next, chunks, None)
            if item is None:
                break
            index, batch = item
            start = index * chunk_size
            self.summary.rows += batch.num_rows
            done = {r - start for r in self.checkpoint.rows_done(index)}
            if len(done) == batch.num_rows:
                continue
            async with self._chunk_room:
                await self._chunk_room.wait_for(
                    lambda: (
                        len(self._open) < MAX_OPEN_CHUNKS or self.dispatcher.stop_code is not None
                    )
                )
            chunk = Chunk(
                index,
                start,
                batch.select(self.input_columns),
                already_done=len(done),
                prefix=self.opts.prefix,
            )
            self._open[index] = chunk
            await self._submit_chunk(chunk, batch, done)

    async def _submit_chunk(self, chunk: Chunk, batch: pa.RecordBatch, done: set[int]) -> None:
        kept = cols.kept_results(batch, self.opts.prefix) if self.opts.retry_errors else {}
        requests = self.spec.render(batch)
        sendable = []
        for offset, request in enumerate(requests):
            if offset in done:
                continue
            if offset in kept:
                self._finish(chunk, offset, kept[offset], counted="kept")
            elif isinstance(request, str):
                self._finish(chunk, offset, cols.skipped(request, self.model))
            else:
                sendable.append((chunk, offset, request))
        self._rows.put_many(sendable)
        await self._rows.wait_for_room()

    async def _worker(self, pool: WorkerPool) -> None:
        rows, send, prefix = self._rows, self.dispatcher.send, self._key_prefix
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
        self._pool.cancel()
        self._rows.clear()
        self._rows.close()  # a worker that missed its cancel finds no row, not a wait
        self._commit_wanted.set()

    def _finish(self, chunk: Chunk, offset: int, result: cols.RowResult, counted: str = "") -> None:
        chunk.finish(offset, result, self._clock())
        if counted == "kept":
            self.summary.kept += 1
        if result.status == cols.STATUS_OK:
            self.summary.ok += 1
        elif result.status == cols.STATUS_ERROR:
            self.summary.error += 1
            self._errors[result.error_type or "error"] += 1
        else:
            self.summary.skipped += 1
        if not counted:
            self.summary.sent += result.attempts > 0
        self.progress.advance()
        if chunk.complete:
            self._commit_wanted.set()

    def _status(self) -> dict[str, Any]:
        return {
            "ok": self.summary.ok,
            "error": self.summary.error,
            "retries": self.client.retry_count,
            "limit": f"{self.client.concurrency_limit}/{self.limits.ceiling}",
            "breaker": self.client.breaker_state,
        }

    # -- commit and output ---------------------------------------------------------------

    async def _committer(self) -> None:
        """Commit finished rows: whole chunks at once, stragglers every ``flush_interval``."""
        interval = self.opts.flush_interval
        while True:
            try:
                await asyncio.wait_for(self._commit_wanted.wait(), timeout=interval / 2)
            except asyncio.TimeoutError:
                pass
            self._commit_wanted.clear()
            final = self._finished.is_set()
            await self._commit(force=final)
            if final:
                return
            if self.dispatcher.stop_code is not None:
                # Rows of open chunks were cancelled: wake a dispatch waiting for chunk room.
                async with self._chunk_room:
                    self._chunk_room.notify_all()

    async def _commit(self, force: bool) -> None:
        now = self._clock()
        for index in sorted(self._open):
            chunk = self._open[index]
            due = chunk.first_unflushed_at is not None and (
                chunk.complete
                or force
                or now - chunk.first_unflushed_at >= self.opts.flush_interval
            )
            if due:
                table = chunk.take_unflushed()
                try:
                    await asyncio.to_thread(self.checkpoint.commit, index, table)
                except OSError as exc:  # disk full...: stop; these rows run again on resume
                    self.dispatcher.stop(
                        EXIT_INCOMPLETE,
                        f"can't write the checkpoint in {self.checkpoint.directory!r}: {_why(exc)}",
                    )
            if chunk.complete and not chunk.unflushed:
                del self._open[index]
                async with self._chunk_room:
                    self._chunk_room.notify_all()

    def _finalize(self, fingerprint: dict[str, Any]) -> None:
        """Assemble the parts, in row order, into the output file; drop the staging directory."""
        prefix = self.opts.prefix
        counts = write_output(
            self.checkpoint.assembled(self.output_schema),
            OutputWriter(
                local_path(self.output_path),
                self.output_format,
                self.output_schema,
                metadata={"input": fingerprint["input"], "rows": self.summary.rows},
            ),
            count=(prefix + "status", prefix + "error_type"),
        )
        self.checkpoint.remove()
        statuses, errors = counts[prefix + "status"], counts[prefix + "error_type"]
        self.summary.ok = statuses.get(cols.STATUS_OK, 0)
        self.summary.error = statuses.get(cols.STATUS_ERROR, 0)
        self.summary.skipped = statuses.get(cols.STATUS_SKIPPED, 0)
        errors.pop("invalid_input", None)
        self._errors = errors


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _shown(request: Request) -> str:
    text = request.inputs if isinstance(request.inputs, str) else json.dumps(request.inputs)
    return text if len(text) <= 200 else text[:200] + "..."
