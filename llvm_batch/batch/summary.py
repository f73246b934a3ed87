"""What a batch run reports at the end: counts, timings, error types, and its exit code."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import safe_url
from . import columns as cols

EXIT_OK = 0
EXIT_ERROR_RATE = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

COMPLETE = "complete"
INCOMPLETE = "incomplete"
INTERRUPTED = "interrupted"
DRY_RUN = "dry_run"
ALREADY_DONE = "already_complete"


@dataclass
class RunSummary:
    """The outcome of :func:`llvm_batch.run_batch`; ``exit_code`` follows DESIGN.md.

    ``input_tokens``/``output_tokens`` add up what the server reported for the output's rows;
    ``truncated`` counts rows whose ``finish_reason`` is ``length`` (cut at ``max_tokens``).
    """

    status: str = COMPLETE
    input: str = ""
    output: str = ""
    rows: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    kept: int = 0
    resumed: int = 0
    sent: int = 0
    retries: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0
    concurrency: str = ""
    concurrency_ceiling: int = 0
    concurrency_limit: int = 0
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)
    error_rate: float = 0.0
    max_error_rate: float = 0.0
    stop_reason: str | None = None
    exit_code: int = EXIT_OK
    preview: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, result: cols.RowResult, errors: Counter[str], *, kept: bool = False) -> None:
        """Count one finished row into the totals, its error type into ``errors``.

        ``kept``: the row's result came from an earlier output (``--retry-errors``).
        """
        self.kept += kept
        if result.status == cols.STATUS_OK:
            self.ok += 1
            self.input_tokens += result.input_tokens or 0
            self.output_tokens += result.output_tokens or 0
            self.truncated += result.finish_reason == cols.FINISH_LENGTH
        elif result.status == cols.STATUS_ERROR:
            self.error += 1
            errors[result.error_type or "error"] += 1
        else:
            self.skipped += 1
        if not kept:
            self.sent += result.attempts > 0

    def finish(
        self, *, errors: Counter[str], elapsed_s: float, exit_code: int | None = None
    ) -> None:
        """Fill the derived fields and pick the exit code."""
        self.error_types = dict(errors.most_common())
        self.elapsed_s = round(elapsed_s, 3)
        done_now = self.ok + self.error + self.skipped - self.resumed - self.kept
        self.rows_per_s = round(done_now / elapsed_s, 1) if elapsed_s > 0 else 0.0
        judged = self.ok + self.error
        self.error_rate = round(self.error / judged, 6) if judged else 0.0
        if exit_code is not None:
            self.exit_code = exit_code
        elif self.error_rate > self.max_error_rate:
            self.exit_code = EXIT_ERROR_RATE
        else:
            self.exit_code = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["input"], values["output"] = safe_url(self.input), safe_url(self.output)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def lines(self) -> list[str]:
        """The human summary printed at the end of a run."""
        head = f"{self.status}: {self.rows} rows -> {safe_url(self.output)}"
        if self.status == DRY_RUN:
            head = f"dry run: {self.rows} rows in {safe_url(self.input)}; nothing sent"
        out = [head]
        if self.status != DRY_RUN:
            counts = (
                f"  ok {self.ok}, error {self.error}, skipped {self.skipped}"
                f", resumed {self.resumed}"
            )
            if self.kept:
                counts += f", kept {self.kept}"
            out.append(counts)
            out.append(
                f"  {self.requests} requests, {self.retries} retries, "
                f"{self.rows_per_s} rows/s, {self.elapsed_s:.1f} s"
            )
            if self.input_tokens or self.output_tokens:
                out.append(f"  tokens: {self.input_tokens} in, {self.output_tokens} out")
            if self.concurrency_limit:
                out.append(
                    f"  concurrency limit at the end {self.concurrency_limit} "
                    f"of {self.concurrency_ceiling} (--concurrency {self.concurrency})"
                )
        if self.truncated:
            out.append(f"  {self.truncated} outputs cut short at max_tokens (finish_reason length)")
        if self.error_types:
            kinds = ", ".join(f"{k} {v}" for k, v in self.error_types.items())
            out.append(f"  error types: {kinds}")
        out.extend(f"  note: {note}" for note in self.notes)
        if self.stop_reason:
            out.append(f"  stopped: {self.stop_reason}")
        if self.status in (INCOMPLETE, INTERRUPTED):
            out.append("  the checkpoint is kept: run the same command again to resume")
        return out
