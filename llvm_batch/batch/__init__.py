"""The batch layer: tables of prompts in, the same tables plus result columns out."""

from __future__ import annotations

from typing import Any

from ..loops import run_sync
from .options import BatchOptions
from .plan import default_output
from .runner import BatchRun
from .summary import RunSummary


def run_batch(input: str, output: str | None = None, **options: Any) -> RunSummary:
    """Run every row of ``input`` through the server; write ``output``; return the summary.

    ``options`` are :class:`BatchOptions` fields (``model``, ``template``, ``concurrency``...).
    Errors in the input or options raise :class:`llvm_batch.InputError` before anything is
    sent; everything else ends in the summary (``status``, ``exit_code``).
    """
    return run_sync(arun_batch(input, output, **options))


async def arun_batch(input: str, output: str | None = None, **options: Any) -> RunSummary:
    """:func:`run_batch` for code that is already async."""
    opts = BatchOptions.from_kwargs(options)
    return await BatchRun(str(input), None if output is None else str(output), opts).run()


__all__ = ["BatchOptions", "BatchRun", "RunSummary", "arun_batch", "default_output", "run_batch"]
