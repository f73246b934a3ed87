"""Helpers shared by the batch and CLI tests: input tables, running the CLI, reading outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from llvm_batch.cli import main

RESULT_COLUMNS = [
    "llvm_output",
    "llvm_status",
    "llvm_error_type",
    "llvm_error",
    "llvm_http_status",
    "llvm_attempts",
    "llvm_retry_wait_s",
    "llvm_latency_ms",
    "llvm_model",
    "llvm_input_tokens",
    "llvm_output_tokens",
    "llvm_finish_reason",
    "llvm_metadata",
]

#: Columns that depend on timing, not on the data: left out when comparing two runs.
TIMING_COLUMNS = ["llvm_retry_wait_s", "llvm_latency_ms", "llvm_attempts", "llvm_http_status"]


def prompts_table(rows: int, *, empty_every: int = 0) -> pa.Table:
    """``id``, ``prompt``, ``topic``: prompt i is ``question i``; every n-th prompt empty."""
    prompts = [
        "" if empty_every and i % empty_every == empty_every - 1 else f"question {i}"
        for i in range(rows)
    ]
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "prompt": pa.array(prompts, pa.string()),
            "topic": pa.array([f"t{i % 7}" for i in range(rows)], pa.string()),
        }
    )


def write_parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``llvm-batch ARGS`` in-process with CliRunner."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


#: The reference server's first model, which CLI runs ask for unless told otherwise.
MODEL = "llvm-model-1"


def run_argv(
    source: Path | str, base_url: str, *extra: str, out: Path | None = None, model: str = MODEL
) -> list[str]:
    """``run SOURCE [-o OUT] -m MODEL --base-url URL EXTRA...``: a run's arguments."""
    output = ["-o", str(out)] if out is not None else []
    return ["run", str(source), *output, "-m", model, "--base-url", base_url, *extra]


def invoke_run(
    source: Path | str,
    base_url: str,
    *extra: str,
    out: Path | None = None,
    model: str = MODEL,
    env: dict[str, str] | None = None,
) -> Result:
    """``llvm-batch run`` of ``source`` against ``base_url`` in-process (see :func:`run_argv`)."""
    return invoke(*run_argv(source, base_url, *extra, out=out, model=model), env=env)


def cli_command(*args: str) -> list[str]:
    """The argv to run ``llvm-batch ARGS`` as a subprocess with this interpreter."""
    return [sys.executable, "-m", "llvm_batch.cli", *args]


def run_cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, env=full_env
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an output file of any format, as dicts."""
    text = str(path)
    if text.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    if text.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path).to_pylist()


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


# -- the checkpoint of a run in progress ---------------------------------------------------


def staging_of(out: Path) -> Path:
    return out.with_name(out.name + ".llvm-staging")


def manifest_parts(staging: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((staging / "manifest.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return []


def committed_rows(staging: Path) -> int:
    return sum(int(part["rows"]) for part in manifest_parts(staging))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` every 10 ms; fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
