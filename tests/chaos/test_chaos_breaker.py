"""A server failing every request for a while: the breaker opens, rows are held instead of
failed, and the run completes once the server recovers.

Breaker settings are not CLI options, so this drives :func:`run_batch` with a fast breaker.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from batch_support import prompts_table, read_rows, write_parquet
from chaos_support import MODEL, posts, status

from llvm_batch.batch import run_batch
from llvm_batch.server import reference_output

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

OUTAGE_FAILURES = 8


def test_an_outage_holds_rows_beyond_their_retry_budget_until_recovery(
    tmp_path: Path, scripted_thread
) -> None:
    lock = threading.Lock()
    failures = [0]

    def handler(seen, request):
        if seen.method != "POST":
            return None
        with lock:  # the first OUTAGE_FAILURES inference requests fail, whichever rows they are
            if failures[0] < OUTAGE_FAILURES:
                failures[0] += 1
                return status(503, "down for maintenance")
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(40))
    out = tmp_path / "out.parquet"

    summary = run_batch(
        source,
        out,
        model=MODEL,
        base_url=app.url,
        concurrency=4,
        max_retries=0,  # without holding, every 503 would be a failed row
        retry_delay=0.001,
        breaker={
            "min_calls": 1,
            "open_seconds": 0.05,
            "max_open_seconds": 0.1,
            "half_open_successes": 1,
        },
        progress=False,
        flush_interval=0.1,
    )

    assert summary.exit_code == 0, summary.lines()
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(40))
    assert all(r["llvm_status"] == "ok" for r in rows)
    assert all(r["llvm_output"] == reference_output(MODEL, r["prompt"]) for r in rows)
    inference = posts(app)
    assert failures[0] == OUTAGE_FAILURES
    assert len(inference) == 40 + OUTAGE_FAILURES
    # Each attempt the server saw is counted on its row, holds included...
    assert sum(r["llvm_attempts"] for r in rows) == len(inference)
    # ...and a row that met a 503 was held and sent again, past its budget of one attempt.
    held = [r for r in rows if r["llvm_attempts"] > 1]
    assert held and all(r["llvm_http_status"] == 200 for r in held)
    assert summary.error == 0 and summary.ok == 40
