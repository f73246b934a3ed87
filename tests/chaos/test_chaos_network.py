"""Chaos on the wire: slow answers, trickled bodies, connections reset or cut mid-answer, and a
server that is unreachable, or goes away mid-run, each against a full ``llvm-batch run``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from batch_support import (
    committed_rows,
    invoke,
    prompts_table,
    read_rows,
    staging_of,
    wait_until,
    write_parquet,
)
from chaos_support import (
    MODEL,
    REFERENCE_MODEL,
    by_prompt,
    committed_ids,
    cut_short,
    hold_until_gone,
    run_args,
    trickle,
)
from conftest import answer_for

from llvm_batch.server import Faults, ServerThread, reference_output
from llvm_batch.server_openai import OPENAI_ROOT

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")


def prompts(*names: str) -> pa.Table:
    return pa.table({"id": list(range(len(names))), "prompt": list(names)})


FILLER = [f"fine {i}" for i in range(6)]


def test_read_timeout_is_retried_then_a_timeout_row(tmp_path: Path, scripted_thread) -> None:
    seen: Counter[str] = Counter()

    async def handler(request_seen, request):
        if request_seen.method != "POST":
            return None
        seen[request_seen.inputs] += 1
        if request_seen.inputs == "stuck" or (
            request_seen.inputs == "slow once" and seen["slow once"] == 1
        ):
            await hold_until_gone(request, 5.0)
        return None

    app = scripted_thread(handler)
    names = [*FILLER, "stuck", *FILLER[:3], "slow once", *FILLER[3:]]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"

    result = invoke(
        *run_args(source, out, app.url, "--timeout", "0.2", "--max-retries", "2", "-c", "1")
    )

    assert result.exit_code == 1, result.output
    rows = by_prompt(read_rows(out))
    stuck = rows["stuck"]
    assert (stuck["llvm_status"], stuck["llvm_error_type"]) == ("error", "timeout")
    assert stuck["llvm_http_status"] is None and stuck["llvm_attempts"] == 3
    assert "did not answer in time" in stuck["llvm_error"]
    assert seen["stuck"] == 3
    assert (rows["slow once"]["llvm_status"], rows["slow once"]["llvm_attempts"]) == ("ok", 2)
    assert "timeout 1" in result.output


@pytest.mark.parametrize(
    ("delay", "timeout", "expected"),
    [(0.002, "5", "ok"), (0.02, "0.3", "timeout")],
    ids=["within-timeout", "beyond-timeout"],
)
def test_a_body_trickled_byte_by_byte(
    tmp_path: Path, scripted_thread, delay: float, timeout: str, expected: str, protocol: str
) -> None:
    text = "dripped out slowly, one byte at a time"
    answer = json.dumps(answer_for(protocol, "m1", text)).encode()
    started: Counter[str] = Counter()

    async def handler(seen, request):
        if seen.inputs != "drip":
            return None
        started["drip"] += 1
        return await trickle(request, answer, delay)

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts("a", "drip", "b"))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--timeout", timeout, "--max-retries", "1"))

    row = by_prompt(read_rows(out))["drip"]
    assert row["llvm_status"] == ("ok" if expected == "ok" else "error")
    if expected == "ok":
        assert result.exit_code == 0, result.output
        assert row["llvm_output"] == "dripped out slowly, one byte at a time"
        assert (row["llvm_attempts"], row["llvm_http_status"]) == (1, 200)
        assert started["drip"] == 1
    else:
        assert result.exit_code == 1, result.output
        assert row["llvm_error_type"] == "timeout" and row["llvm_attempts"] == 2
        assert started["drip"] == 2  # the answer had begun both times: headers were in


@pytest.mark.parametrize("abort", [True, False], ids=["reset", "truncated"])
def test_an_answer_cut_short_is_a_retried_connection_error(
    tmp_path: Path, scripted_thread, abort: bool
) -> None:
    seen: Counter[str] = Counter()

    async def handler(request_seen, request):
        if request_seen.method != "POST":
            return None
        seen[request_seen.inputs] += 1
        if request_seen.inputs == "cut" or (
            request_seen.inputs == "cut once" and seen["cut once"] == 1
        ):
            return await cut_short(request, abort=abort)
        return None

    app = scripted_thread(handler)
    names = [*FILLER, "cut", *FILLER, "cut once", "last"]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "-c", "1"))

    assert result.exit_code == 1, result.output
    rows = by_prompt(read_rows(out))
    cut = rows["cut"]
    assert cut["llvm_status"] == "error"
    assert cut["llvm_error_type"] == "connection"
    assert cut["llvm_attempts"] == 4 and seen["cut"] == 4
    assert cut["llvm_output"] is None and "cut short" in cut["llvm_error"]
    once = rows["cut once"]
    assert (once["llvm_status"], once["llvm_attempts"]) == ("ok", 2)
    assert once["llvm_output"] == reference_output(MODEL, "cut once")
    assert all(r["llvm_status"] == "ok" for p, r in rows.items() if p != "cut")


def test_connection_refused_throughout_exits_3_and_the_same_command_completes_later(
    tmp_path: Path, closed_url: str, protocol: str
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(20, empty_every=7))
    out = tmp_path / "out.parquet"
    args = [
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        REFERENCE_MODEL,
        "--base-url",
        closed_url + (OPENAI_ROOT if protocol == "openai" else ""),
        "--retry-delay",
        "0.001",
        "--max-outage",
        "0.3",
        "--no-progress",
    ]
    summary_path = tmp_path / "summary.json"

    result = invoke(*args, "--summary-json", str(summary_path))

    assert result.exit_code == 3, result.output
    assert "incomplete" in result.output and "could not connect" in result.output
    assert "run the same command again" in result.output
    assert not out.exists()
    summary = json.loads(summary_path.read_text())
    assert (summary["status"], summary["exit_code"]) == ("incomplete", 3)
    # The outage budget bounds the wait, even though the open breaker asks for 5 s.
    assert summary["elapsed_s"] < 4.0

    port = int(closed_url.rsplit(":", 1)[1])
    with ServerThread(host="127.0.0.1", port=port, protocol=protocol) as server:
        result = invoke(*args)
        sent = server.stats.inference_requests
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(20))
    assert {r["llvm_status"] for r in rows} == {"ok", "skipped"}
    assert sent == sum(r["llvm_status"] == "ok" for r in rows)


def test_server_gone_mid_run_exits_3_keeps_checkpoint_and_resumes_without_resending(
    tmp_path: Path, protocol: str
) -> None:
    rows_total = 400
    source = write_parquet(tmp_path / "in.parquet", prompts_table(rows_total))
    out = tmp_path / "out.parquet"
    staging = staging_of(out)
    first = ServerThread(port=0, faults=Faults(latency=0.01), protocol=protocol).start()
    port = first.server.port
    args = [
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        REFERENCE_MODEL,
        "--base-url",
        first.url,
        "--concurrency",
        "2",
        "--chunk-size",
        "10",
        "--flush-interval",
        "0.05",
        "--retry-delay",
        "0.001",
        "--max-retries",
        "10",  # rows outlast the breaker's 5-failure trip, so none fails before it opens
        "--max-outage",
        "0.5",
        "--no-progress",
    ]

    def pull_the_plug() -> None:
        wait_until(lambda: committed_rows(staging) >= 20, "the first commits")
        first.stop()

    killer = threading.Thread(target=pull_the_plug)
    killer.start()
    try:
        result = invoke(*args)
    finally:
        killer.join()
        first.stop()

    assert result.exit_code == 3, result.output
    assert "server unavailable" in result.output and "resume" in result.output
    assert not out.exists()
    done = committed_ids(staging)
    assert 20 <= len(done) < rows_total and len(set(done)) == len(done)

    with ServerThread(host="127.0.0.1", port=port, protocol=protocol) as second:
        result = invoke(*args)
        resent = second.stats.inference_requests
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(rows_total))
    assert all(r["llvm_status"] == "ok" for r in rows)
    assert all(r["llvm_output"] == reference_output(REFERENCE_MODEL, r["prompt"]) for r in rows)
    assert resent == rows_total - len(done)
    assert f"resumed {len(done)}" in result.output
    assert not staging.exists()
