"""The batch runner: plan -> lock -> checkpoint -> rows through the client -> output.

:func:`~llvm_batch.batch.plan.plan_run` decides what the run does before anything is sent;
:class:`~llvm_batch.batch.pump.RowPump` sends the rows; this module holds the run's phases
together: the output's lock, resuming, the atomic output, and stop signals in every phase.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

from . import columns as cols
from .checkpoint import Checkpoint, staging_dir_for
from .dispatch import Dispatcher
from .lock import OutputLock, OutputLocked
from .options import BatchOptions
from .plan import RunPlan, output_path_for, plan_run, preview
from .pump import RowPump
from .signals import Interrupts, on_stop_signals
from .sources import local_path
from .summary import (
    ALREADY_DONE,
    COMPLETE,
    DRY_RUN,
    EXIT_INCOMPLETE,
    INCOMPLETE,
    INTERRUPTED,
    RunSummary,
)
from .target import finished_rows, output_compression
from .writers import OutputWriter, WriteInterrupted, write_output


class BatchRun:
    """One run of a batch job; :meth:`run` does it and returns the :class:`RunSummary`."""

    def __init__(
        self,
        input_path: str,
        output_path: str | None,
        options: BatchOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.opts = options
        self.input_path = str(input_path)
        self.output_path = output_path_for(self.input_path, output_path)
        self._clock = clock
        limits = options.client.limits
        self.summary = RunSummary(
            input=self.input_path,
            output=self.output_path,
            max_error_rate=options.max_error_rate,
            concurrency=limits.describe(),
            concurrency_ceiling=limits.ceiling,
        )
        self._errors: Counter[str] = Counter()
        self._live: Dispatcher | None = None  # the dispatcher, once rows may go out
        self._interrupts = Interrupts(self._interrupt)
        self._stop_writing = threading.Event()

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
        plan = await asyncio.to_thread(plan_run, self.input_path, self.output_path, self.opts)
        if self.opts.dry_run:
            return self._dry_run(plan, started)
        lock = OutputLock(staging_dir_for(local_path(self.output_path)))
        try:
            waited = lock.acquire(wait=self.opts.wait_for_lock, on_wait=self._say_waiting)
            if not await self._interrupts.unless_interrupted(waited):
                return self._finish_summary(started)
        except OutputLocked:
            return self._locked_out(started)
        try:
            return await self._run_locked(plan, started)
        finally:
            lock.release(remove_if_empty=True)

    async def _run_locked(self, plan: RunPlan, started: float) -> RunSummary:
        """The run, holding the output's lock: nobody else writes or sweeps its checkpoint."""
        done = self._already_done(plan)
        if done is not None:
            return done
        pump = RowPump(plan, self.opts, self.summary, self._clock)
        self._errors = pump.errors
        async with pump.client as client:
            self._live = pump.dispatcher
            if not await self._interrupts.unless_interrupted(pump.dispatcher.preflight()):
                return self._finish_summary(started)
            checkpoint = Checkpoint.open(
                self.output_path,
                plan.fingerprint,
                chunk_size=self.opts.chunk_size,
                overwrite=self.opts.overwrite,
            )
            self.summary.resumed = checkpoint.committed_rows
            self.summary.notes.extend(
                f"checkpoint part {name} was damaged or missing: its rows ran again"
                for name in checkpoint.dropped
            )
            await pump.run(checkpoint)
            self.summary.requests = client.request_count
            self.summary.retries = client.retry_count
            self.summary.concurrency_limit = client.concurrency_limit
        if pump.dispatcher.stop_code is None:
            try:
                self._errors = await asyncio.to_thread(
                    assemble_output, plan, checkpoint, self.summary, self._stop_writing.is_set
                )
            except WriteInterrupted:
                pass  # the signal's stop code says it; the checkpoint is whole
            except OSError as exc:  # disk full...: every row is committed, resumable
                pump.dispatcher.stop(
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

    # -- before sending ------------------------------------------------------------------

    def _dry_run(self, plan: RunPlan, started: float) -> RunSummary:
        self.summary.preview.extend(preview(plan))
        self.summary.rows = plan.source.count_rows()
        self.summary.status = DRY_RUN
        self.summary.finish(errors=self._errors, elapsed_s=self._clock() - started, exit_code=0)
        return self.summary

    def _already_done(self, plan: RunPlan) -> RunSummary | None:
        """A summary when the output is a finished run of this very job."""
        if self.opts.overwrite or self.opts.retry_errors:
            return None
        rows = finished_rows(self.output_path, plan.output_format, plan.fingerprint)
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


def assemble_output(
    plan: RunPlan, checkpoint: Checkpoint, summary: RunSummary, stop: Callable[[], bool]
) -> Counter[str]:
    """Assemble the parts, in row order, into the output file; drop the staging directory.

    The summary's totals become the output's (rows resumed from an earlier run count too);
    returns the error types of its rows. ``stop`` interrupts the assembly (a signal).
    """
    prefix = plan.prefix
    values, totals = write_output(
        checkpoint.assembled(plan.output_schema),
        OutputWriter(
            local_path(plan.output_path),
            plan.output_format,
            plan.output_schema,
            metadata={**plan.fingerprint, "rows": summary.rows},
            compression=output_compression(plan.output_path),
        ),
        count=(prefix + "status", prefix + "error_type", prefix + "finish_reason"),
        total=(prefix + "input_tokens", prefix + "output_tokens"),
        stop=stop,
    )
    checkpoint.remove()
    statuses, errors = values[prefix + "status"], values[prefix + "error_type"]
    summary.input_tokens = totals[prefix + "input_tokens"]
    summary.output_tokens = totals[prefix + "output_tokens"]
    summary.truncated = values[prefix + "finish_reason"].get(cols.FINISH_LENGTH, 0)
    summary.ok = statuses.get(cols.STATUS_OK, 0)
    summary.error = statuses.get(cols.STATUS_ERROR, 0)
    summary.skipped = statuses.get(cols.STATUS_SKIPPED, 0)
    errors.pop("invalid_input", None)
    return errors


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
