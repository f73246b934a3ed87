"""The batch runner: read chunks -> render prompts -> submit -> collect -> commit parts -> output.

Rows go to the client with backpressure (never more in hand than the client's queue takes),
rows refused by an open breaker are held and re-sent, finished rows are committed to the
checkpoint every few seconds, and the output appears atomically once every row is in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pyarrow as pa

from ..errors import InputError
from ..options import DEFAULT_PROTOCOL, ENV_DEFAULT_MODEL, Priority
from . import columns as cols
from .checkpoint import Checkpoint, staging_dir_for
from .chunk import Chunk
from .committer import Committer
from .config import BatchOptions
from .dispatch import Dispatcher
from .feed import RowFeed, rows_ahead
from .layout import plan_columns
from .lock import OutputLock, OutputLocked
from .progress import Progress
from .prompts import Request
from .signals import Interrupts, on_stop_signals
from .sinks import OutputWriter, WriteInterrupted, default_output, write_output
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
from .target import check_target, finished_rows, output_compression
from .workers import WorkerPool

logger = logging.getLogger(__name__)
T = TypeVar("T")

PREVIEW_ROWS = 5


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
        self._commits = Committer(
            options.flush_interval,
            clock,
            stop=lambda code, reason: self.dispatcher.stop(code, reason),
            stopped=lambda: self.dispatcher.stop_code is not None,
        )
        # Workers (one per slot, plus stand-ins for rows in backoff) pull rows from a feed
        # with backpressure: no task per row.
        ceiling = self.limits.ceiling
        self._pool = WorkerPool(
            self._worker,
            size=ceiling,
            limit=ceiling * 4 + 32,
            on_failure=lambda exc: self._died("a row worker", exc),
        )
        self._live: Dispatcher | None = None  # the dispatcher, once there is one
        self._interrupts = Interrupts(self._interrupt)
        self._stop_writing = threading.Event()
        self._rows: RowFeed[tuple[Chunk, int, Request]] = RowFeed(low=self._window())

    # -- the whole run -------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """The whole run; SIGINT/SIGTERM in any phase stop it with 130/143 and one line."""
        restore = on_stop_signals(self._interrupts)
        try:
            return await self._run()
        finally:
            restore()

    def _interrupt(self, code: int, reason: str) -> None:
        self._stop_writing.set()  # the output's assembly
        if self._live is not None:
            self._live.stop(code, reason)

    async def _run(self) -> RunSummary:
        started = self._clock()
        source_path = self.output_path if self.opts.retry_errors else self.input_path
        if self.opts.retry_errors and not os.path.exists(local_path(source_path)):
            raise InputError(f"--retry-errors needs an existing output; {source_path!r} is missing")
        self.source = Source(
            source_path,
            self.output_format if self.opts.retry_errors else self.opts.input_format,
            string_columns=self.spec.text_columns(),
        )
        await asyncio.to_thread(self.source.prescan)
        self._setup_columns()
        self.spec.check(self.source.schema)
        check_target(
            self.input_path,
            self.output_path,
            self.output_format,
            summary_json=self.opts.summary_json,
        )
        if self.opts.dry_run:
            return self._dry_run(started)
        self.model = self.opts.model or os.environ.get(ENV_DEFAULT_MODEL) or ""
        if not self.model:
            raise InputError(f"no model given: pass --model or set {ENV_DEFAULT_MODEL}")
        self.protocol = self.opts.protocol_in_use()
        fingerprint = {
            "input": self.source.fingerprint(),
            "options": {**self.opts.shaping(self.protocol), "model": self.model},
        }
        lock = OutputLock(staging_dir_for(local_path(self.output_path)))
        try:
            waited = lock.acquire(wait=self.opts.wait_for_lock, on_wait=self._say_waiting)
            if not await self._interrupts.unless_interrupted(waited):
                return self._finish_summary(started)
        except OutputLocked:
            return self._locked_out(started)
        try:
            return await self._run_locked(started, fingerprint)
        finally:
            lock.release(remove_if_empty=True)

    async def _run_locked(self, started: float, fingerprint: dict[str, Any]) -> RunSummary:
        """The run, holding the output's lock: nobody else writes or sweeps its checkpoint."""
        done = self._already_done(fingerprint)
        if done is not None:
            return done
        self._key_prefix = hashlib.sha256(
            json.dumps(fingerprint, sort_keys=True).encode()
        ).hexdigest()[:16]
        async with self._server() as base_url:
            client = self.opts.client(
                base_url,
                self.model,
                protocol=self.protocol,
                queue_size=self._pool.limit,
                sleep=self._pool.sleep,
            )
            async with client:
                self.client = client
                self.dispatcher = self._live = Dispatcher(
                    client,
                    self.model,
                    priority=self.priority,
                    max_outage=self.opts.max_outage,
                    on_stop=self._cancel_rows,
                    clock=self._clock,
                )
                if not await self._interrupts.unless_interrupted(self.dispatcher.preflight()):
                    return self._finish_summary(started)
                self.checkpoint = Checkpoint.open(
                    self.output_path,
                    fingerprint,
                    chunk_size=self.opts.chunk_size,
                    overwrite=self.opts.overwrite,
                )
                self.summary.resumed = self.checkpoint.committed_rows
                self.summary.notes.extend(
                    f"checkpoint part {name} was damaged or missing: its rows ran again"
                    for name in self.checkpoint.dropped
                )
                await self._process()
                self.summary.requests = client.request_count
                self.summary.retries = client.retry_count
                self.summary.concurrency_limit = client.concurrency_limit
        if self.dispatcher.stop_code is None:
            try:
                await asyncio.to_thread(self._finalize, fingerprint)
            except WriteInterrupted:
                pass  # the signal's stop code says it; the checkpoint is whole
            except OSError as exc:  # disk full...: every row is committed, resumable
                self.dispatcher.stop(
                    EXIT_INCOMPLETE, f"can't write the output {self.output_path!r}: {_why(exc)}"
                )
            else:
                self.summary.status = COMPLETE
        return self._finish_summary(started)

    def _finish_summary(self, started: float) -> RunSummary:
        code, reason = self._interrupts.signal or (None, None)
        if self._live is not None and self._live.stop_code is not None:
            code, reason = self._live.stop_code, self._live.stop_reason
        if code is not None:
            self.summary.status = INCOMPLETE if code == EXIT_INCOMPLETE else INTERRUPTED
            self.summary.stop_reason = reason
        self.summary.finish(errors=self._errors, elapsed_s=self._clock() - started, exit_code=code)
        return self.summary

    @asynccontextmanager
    async def _server(self) -> AsyncIterator[str | None]:
        """The base URL to use: the bundled reference server's with ``local_server``."""
        if not self.opts.local_server:
            yield self.opts.base_url
            return
        from ..server import ReferenceServer

        wire = "llvm" if self.protocol == DEFAULT_PROTOCOL else "openai"
        async with ReferenceServer(protocol=wire) as server:
            yield server.url

    def _window(self) -> int:
        """Rows queued for the workers: enough to keep every slot busy, no more."""
        return rows_ahead(self.limits.ceiling)

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

    def _already_done(self, fingerprint: dict[str, Any]) -> RunSummary | None:
        """A summary when the output is a finished run of this very job."""
        if self.opts.overwrite or self.opts.retry_errors:
            return None
        rows = finished_rows(self.output_path, self.output_format, fingerprint)
        if rows is None:
            return None
        self.summary.status = ALREADY_DONE
        self.summary.rows = rows
        self.summary.finish(errors=self._errors, elapsed_s=0.0, exit_code=0)
        return self.summary

    def _say_waiting(self) -> None:
        if not self.opts.quiet:
            print(
                f"waiting for another llvm-batch run to finish writing {self.output_path!r}",
                file=sys.stderr,
                flush=True,
            )

    def _locked_out(self, started: float) -> RunSummary:
        self.summary.status = INCOMPLETE
        self.summary.stop_reason = (
            f"another llvm-batch run is writing {self.output_path!r} (it holds the lock on "
            f"{staging_dir_for(local_path(self.output_path))!r}); nothing was sent: let it "
            "finish, or pass --wait-for-lock to wait for it"
        )
        self.summary.finish(errors=self._errors, elapsed_s=self._clock() - started, exit_code=3)
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
        committer = asyncio.create_task(
            self._watched(self._commits.run(self.checkpoint), "the checkpoint writer")
        )
        try:
            await self._dispatch()
            if self.dispatcher.stop_code is None:
                self._rows.close()
            await self._pool.join()
        finally:
            self._commits.finish()
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

    async def _dispatch(self) -> None:
        chunk_size = self.checkpoint.chunk_size
        chunks = self.source.chunks(chunk_size)
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
            done = {r - start for r in self.checkpoint.rows_done(index)}
            if len(done) == batch.num_rows:
                continue
            await self._commits.wait_for_room()
            chunk = Chunk(
                index,
                start,
                batch.select(self.input_columns),
                already_done=len(done),
                prefix=self.opts.prefix,
            )
            self._commits.open[index] = chunk
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
        self._commits.wanted.set()

    def _finish(self, chunk: Chunk, offset: int, result: cols.RowResult, counted: str = "") -> None:
        chunk.finish(offset, result, self._clock())
        if counted == "kept":
            self.summary.kept += 1
        if result.status == cols.STATUS_OK:
            self.summary.ok += 1
            self._count_tokens(result)
        elif result.status == cols.STATUS_ERROR:
            self.summary.error += 1
            self._errors[result.error_type or "error"] += 1
        else:
            self.summary.skipped += 1
        if not counted:
            self.summary.sent += result.attempts > 0
        self.progress.advance()
        if chunk.complete:
            self._commits.wanted.set()

    def _count_tokens(self, result: cols.RowResult) -> None:
        self.summary.input_tokens += result.input_tokens or 0
        self.summary.output_tokens += result.output_tokens or 0
        self.summary.truncated += result.finish_reason == cols.FINISH_LENGTH

    def _status(self) -> dict[str, Any]:
        return {
            "ok": self.summary.ok,
            "error": self.summary.error,
            "retries": self.client.retry_count,
            "limit": f"{self.client.concurrency_limit}/{self.limits.ceiling}",
            "breaker": self.client.breaker_state,
        }

    # -- commit and output ---------------------------------------------------------------

    def _finalize(self, fingerprint: dict[str, Any]) -> None:
        """Assemble the parts, in row order, into the output file; drop the staging directory."""
        prefix = self.opts.prefix
        counts = write_output(
            self.checkpoint.assembled(self.output_schema),
            OutputWriter(
                local_path(self.output_path),
                self.output_format,
                self.output_schema,
                metadata={**fingerprint, "rows": self.summary.rows},
                compression=output_compression(self.output_path),
            ),
            count=(prefix + "status", prefix + "error_type", prefix + "finish_reason"),
            total=(prefix + "input_tokens", prefix + "output_tokens"),
            stop=self._stop_writing.is_set,
        )
        self.checkpoint.remove()
        values, totals = counts
        statuses, errors = values[prefix + "status"], values[prefix + "error_type"]
        # Rows resumed from an earlier run count too: the totals are the output's.
        self.summary.input_tokens = totals[prefix + "input_tokens"]
        self.summary.output_tokens = totals[prefix + "output_tokens"]
        self.summary.truncated = values[prefix + "finish_reason"].get(cols.FINISH_LENGTH, 0)
        self.summary.ok = statuses.get(cols.STATUS_OK, 0)
        self.summary.error = statuses.get(cols.STATUS_ERROR, 0)
        self.summary.skipped = statuses.get(cols.STATUS_SKIPPED, 0)
        errors.pop("invalid_input", None)
        self._errors = errors


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _shown(request: Request) -> str:
    text = request.shown()
    return text if len(text) <= 200 else text[:200] + "..."
