"""The batch runner against failing servers: faults, outages, auth, and the exit codes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiohttp import web
from batch_support import invoke, invoke_run, prompts_table, read_rows, write_parquet
from conftest import Seen

from llvm_batch.batch import run_batch
from llvm_batch.server import Faults, ServerThread, reference_output

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

MODEL = "llvm-model-1"
FAST = {"retry_delay": 0.005, "progress": False, "flush_interval": 0.2}


def test_faulty_server_every_row_exactly_once_with_attempts(tmp_path: Path, make_server) -> None:
    faults = Faults(error_rate=0.2, rate_limit_rate=0.05, retry_after=0, reset_rate=0.02, seed=7)
    server = make_server(faults=faults)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(400))
    out = tmp_path / "out.parquet"

    summary = run_batch(
        source,
        out,
        model=MODEL,
        base_url=server.url,
        concurrency=16,
        max_retries=6,
        chunk_size=64,
        breaker=False,
        max_error_rate=1.0,
        **FAST,
    )

    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(400))
    ok = [r for r in rows if r["llvm_status"] == "ok"]
    assert len(ok) >= 390
    for row in ok:
        assert row["llvm_output"] == reference_output(MODEL, row["prompt"])
    for row in rows:
        if row["llvm_status"] == "error":
            assert row["llvm_attempts"] == 7 and row["llvm_error_type"] in (
                "server_error",
                "rate_limited",
                "connection",
            )
    retried = [r for r in rows if r["llvm_attempts"] > 1]
    assert len(retried) > 40
    # Most waited out a backoff; a 503 much quicker than sound answers reads as "full" and
    # queues again for a slot at once instead (the limit paces it).
    assert sum(r["llvm_retry_wait_s"] > 0 for r in retried) > len(retried) / 2
    # every attempt the rows recorded is one the server saw
    assert sum(r["llvm_attempts"] for r in rows) == server.stats.inference_requests
    assert summary.ok == len(ok) and summary.retries > 40


def test_error_rate_above_the_limit_exits_1(tmp_path: Path, server) -> None:
    table = pa.table(
        {"prompt": [f"p{i}" for i in range(10)], "mt": [-1 if i < 3 else 5 for i in range(10)]}
    )
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out.parquet"
    base = [
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        MODEL,
        "--base-url",
        server.url,
        "--max-tokens-column",
        "mt",
    ]

    result = invoke(*base)
    assert result.exit_code == 1, result.output
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows[:4]] == ["error", "error", "error", "ok"]
    assert rows[0]["llvm_error_type"] == "client_error" and rows[0]["llvm_http_status"] == 422
    assert rows[0]["llvm_attempts"] == 1  # 422 is never retried
    assert "max_tokens" in rows[0]["llvm_error"]
    assert "client_error 3" in result.output

    result = invoke(*base, "--overwrite", "--max-error-rate", "0.3")
    assert result.exit_code == 0, result.output


def test_open_breaker_holds_rows_until_the_server_recovers(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(error_rate=1.0))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(60))
    out = tmp_path / "out.parquet"
    healed = threading.Timer(0.6, server.set_faults, kwargs={"error_rate": 0.0})
    healed.start()
    try:
        summary = run_batch(
            source,
            out,
            model=MODEL,
            base_url=server.url,
            concurrency=4,
            max_retries=2,
            breaker={"open_seconds": 0.05, "max_open_seconds": 0.2, "min_calls": 3},
            **FAST,
        )
    finally:
        healed.cancel()
    rows = read_rows(out)
    assert summary.exit_code == 0, summary.lines()
    assert {r["llvm_status"] for r in rows} == {"ok"}
    assert server.stats.statuses[503] >= 3


def test_connection_refused_throughout_stops_incomplete_exit_3(tmp_path: Path) -> None:
    with ServerThread() as gone:
        url = gone.url
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / "out.parquet"
    result = invoke_run(source, url, "--max-outage", "0.3", "--retry-delay", "0.01", out=out)
    assert result.exit_code == 3, result.output
    assert "incomplete" in result.output and "could not connect" in result.output
    assert not out.exists()


def _auth_changes(state: Counter[str]) -> Any:
    """A scripted handler: inference is refused with 401 after 5 accepted requests."""

    def handler(seen: Seen, request: web.Request) -> web.Response | None:
        if seen.method == "POST":
            state["inference"] += 1
            if state["inference"] > 5:
                return web.json_response({"error": "key revoked"}, status=401)
        return None

    return handler


def test_auth_failure_mid_run_stops_early_exit_3_and_keeps_checkpoint(
    tmp_path: Path, scripted_thread
) -> None:
    state: Counter[str] = Counter()
    source = write_parquet(tmp_path / "in.parquet", prompts_table(200))
    out = tmp_path / "out.parquet"
    server = scripted_thread(_auth_changes(state))
    result = invoke_run(source, server.url, "--concurrency", "1", "--chunk-size", "5", out=out)
    assert result.exit_code == 3, result.output
    assert "API key was refused" in result.output
    assert state["inference"] < 20  # stopped early, not one 401 per row
    assert not out.exists()
    assert (tmp_path / "out.parquet.llvm-staging" / "manifest.json").exists()


def test_auth_refused_before_anything_is_sent_exits_2(tmp_path: Path, make_server) -> None:
    server = make_server(api_key="right-key")
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    result = invoke_run(source, server.url, env={"LLVM_API_KEY": "wrong-key"})
    assert result.exit_code == 2
    assert "refused the API key" in result.output
    assert "wrong-key" not in result.output
    assert server.stats.inference_requests == 0


def test_api_key_from_environment_and_never_printed(tmp_path: Path, make_server) -> None:
    key = "sk-CANARY-0123456789"
    server = make_server(api_key=key)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    out = tmp_path / "out.csv"
    result = invoke_run(source, server.url, "--debug", out=out, env={"LLVM_API_KEY": key})
    assert result.exit_code == 0, result.output
    assert key not in result.output
    assert key not in out.read_text()
    key_file = tmp_path / "key.txt"
    key_file.write_text(key + "\n")
    result = invoke_run(
        source, server.url, "--api-key-file", str(key_file), out=tmp_path / "o2.parquet"
    )
    assert result.exit_code == 0, result.output


def test_model_disappearing_mid_run_stops_early_exit_3(tmp_path: Path, make_server) -> None:
    server = make_server()
    source = write_parquet(tmp_path / "in.parquet", prompts_table(300))
    out = tmp_path / "out.parquet"
    threading.Timer(0.05, lambda: setattr(server.server, "models", ["other"])).start()
    summary = run_batch(
        source,
        out,
        model=MODEL,
        base_url=server.url,
        concurrency=2,
        max_rps=400,
        chunk_size=10,
        **FAST,
    )
    assert summary.exit_code == 3
    assert "disappeared" in (summary.stop_reason or "")
    assert server.stats.statuses[404] <= 4


def test_a_429_with_retry_after_pauses_every_row_not_just_one(
    tmp_path: Path, scripted_thread
) -> None:
    arrivals: list[float] = []
    pause = 0.4

    def handler(seen: Seen, request: web.Request) -> web.Response | None:
        if seen.method != "POST":
            return None
        arrivals.append(time.monotonic())
        if len(arrivals) == 3:
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": str(pause)}
            )
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(40))
    summary = run_batch(
        source, tmp_path / "out.parquet", model="m1", base_url=app.url, concurrency=1, **FAST
    )
    assert summary.exit_code == 0 and summary.ok == 40
    limited = arrivals[2]
    during_pause = [t for t in arrivals[3:] if t < limited + pause - 0.02]
    assert during_pause == []
    assert len(arrivals) == 41


def test_a_row_waiting_out_its_backoff_does_not_hold_up_the_others(
    tmp_path: Path, scripted_thread, reply
) -> None:
    # One slot, one worker: while "question 0" waits a second before its retry, a stand-in
    # worker sends every other row, and the retry comes last.
    first = threading.Event()

    def once_unavailable(seen, request):
        if seen.method == "POST" and seen.inputs == "question 0" and not first.is_set():
            first.set()
            return reply(503, "busy", **{"Retry-After": "1"})
        return None

    app = scripted_thread(once_unavailable)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(40))
    out = tmp_path / "out.parquet"

    started = time.monotonic()
    summary = run_batch(
        source, out, model="m1", base_url=app.url, concurrency=1, max_retries=2, **FAST
    )

    assert time.monotonic() - started >= 1.0
    assert app.inputs == ["question 0", *(f"question {i}" for i in range(1, 40)), "question 0"]
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows] == ["ok"] * 40
    assert rows[0]["llvm_attempts"] == 2 and rows[0]["llvm_retry_wait_s"] >= 1.0
    assert summary.requests == 1 + 41  # the model check, then the rows
