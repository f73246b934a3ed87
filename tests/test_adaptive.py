"""Adaptive concurrency end to end: a full server on loopback, the runner, the CLI, the client.

The server holds a few requests at a time and answers 503 at once beyond that; the limit
comes down to what it holds, rows never fail because it was full, and the limit is visible
in ``client.stats()``, the progress lines, the summary and ``--summary-json``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from batch_support import invoke, invoke_run, prompts_table, read_rows, write_parquet

from llvm_batch import AsyncLLVMClient, CircuitOpenError, QueueFullError, ServerError
from llvm_batch.batch import run_batch
from llvm_batch.server import Faults, reference_output

MODEL = "llvm-model-1"


def test_the_client_limit_comes_down_to_what_a_full_server_holds(make_server) -> None:
    server = make_server(faults=Faults(capacity=4, latency=0.01))

    async def main():
        async with AsyncLLVMClient(
            server.url,
            max_concurrent_requests=32,
            max_retries=8,
            retry_delay=0.01,
            queue_size=500,
            breaker=False,  # the limiter alone: a loaded test machine may look like an outage
        ) as client:
            answers = await asyncio.gather(
                *(client.run_inference(MODEL, f"p{i}") for i in range(300))
            )
            return answers, client.stats()

    answers, stats = asyncio.run(main())
    assert [a["outputs"] for a in answers] == [reference_output(MODEL, f"p{i}") for i in range(300)]
    assert stats.concurrency_ceiling == 32
    assert 1 <= stats.concurrency_limit <= 6
    refused = server.stats.statuses[503]
    assert refused < 0.4 * server.stats.inference_requests  # not one 503 per slot per round


def test_concurrency_auto_runs_a_file_against_a_full_server_without_failing_a_row(
    tmp_path: Path, make_server
) -> None:
    server = make_server(faults=Faults(capacity=3, latency=0.02))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(120))
    out = tmp_path / "out.parquet"
    summary_path = tmp_path / "summary.json"
    result = invoke_run(
        source,
        server.url,
        "--concurrency",
        "auto",
        "--retry-delay",
        "0.01",
        "--no-progress",
        "--summary-json",
        str(summary_path),
        out=out,
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert {r["llvm_status"] for r in rows} == {"ok"}
    summary = json.loads(summary_path.read_text())
    assert summary["concurrency"] == "auto"
    assert summary["concurrency_ceiling"] == 256
    assert 1 <= summary["concurrency_limit"] <= 6
    assert "concurrency limit at the end" in result.output


def test_progress_lines_show_the_limit(tmp_path: Path, server, capsys) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(20))
    summary = run_batch(
        source,
        tmp_path / "out.parquet",
        model=MODEL,
        base_url=server.url,
        concurrency=6,
        progress_interval=1e-9,
    )
    assert summary.exit_code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "rows/s" in line]
    assert lines and all("limit 6/6" in line and "breaker closed" in line for line in lines)


@pytest.mark.parametrize("value", ["0", "lots", "-2"])
def test_a_bad_concurrency_exits_2_saying_what_to_use(tmp_path: Path, value) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(2))
    result = invoke("run", str(source), "-m", MODEL, "--concurrency", value)
    assert result.exit_code == 2
    assert "--concurrency" in result.output and "'auto'" in result.output


def test_a_bad_concurrency_in_python_is_an_input_error(tmp_path: Path) -> None:
    from llvm_batch import InputError

    with pytest.raises(InputError, match="concurrency must be an integer of at least 1"):
        run_batch(tmp_path / "x.parquet", model=MODEL, concurrency="many")


# -- errors that reach the caller keep their context ----------------------------------------


def test_a_final_error_names_no_next_retry(scripted, reply, fake_time) -> None:
    async def main():
        async with scripted(lambda seen, request: reply(500, "boom")) as app:
            async with AsyncLLVMClient(
                app.url, max_retries=2, breaker=False, **fake_time.client_kwargs()
            ) as client:
                with pytest.raises(ServerError) as caught:
                    await client.run_inference(MODEL, "x")
                return caught.value, client.stats()

    error, stats = asyncio.run(main())
    assert error.attempts == 3
    assert error.next_retry_at is None  # no retry of this call will ever come
    assert "next retry" not in str(error)
    assert stats.retries == 2


def test_a_retry_refused_by_the_breaker_is_not_counted_and_its_cause_names_no_retry(
    scripted, reply, fake_time
) -> None:
    async def main():
        async with scripted(lambda seen, request: reply(502, "bad gateway")) as app:
            async with AsyncLLVMClient(
                app.url,
                max_retries=5,
                breaker={"min_calls": 2, "open_seconds": 30.0},
                **fake_time.client_kwargs(),
            ) as client:
                with pytest.raises(CircuitOpenError) as caught:
                    await client.run_inference(MODEL, "x")
                return app, caught.value, client.stats()

    app, error, stats = asyncio.run(main())
    assert len(app.seen) == 2
    assert stats.retries == 1  # the third attempt never went out
    assert error.attempts == 2 and error.next_retry_at is not None
    cause = error.__cause__
    assert isinstance(cause, ServerError) and cause.status == 502
    assert cause.next_retry_at is None and "next retry" not in str(cause)


def test_queue_full_names_the_operation_and_model(scripted, fake_time) -> None:
    gate = asyncio.Event()

    async def slow(seen, request):
        await gate.wait()

    async def main():
        async with scripted(slow) as app:
            async with AsyncLLVMClient(
                app.url, max_concurrent_requests=1, queue_size=1, **fake_time.client_kwargs()
            ) as client:
                first = asyncio.ensure_future(client.run_inference(MODEL, "a"))
                second = asyncio.ensure_future(client.run_inference(MODEL, "b"))
                while client.queue_depth < 1:
                    await asyncio.sleep(0.001)
                with pytest.raises(QueueFullError) as caught:
                    await client.run_inference(MODEL, "c")
                gate.set()
                await asyncio.gather(first, second)
                return caught.value

    error = asyncio.run(main())
    assert (error.operation, error.model) == ("inference", MODEL)
    assert "inference on model 'llvm-model-1'" in str(error)
