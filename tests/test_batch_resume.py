"""Crash safety: kill -9 and SIGTERM mid-run, resume, fingerprints, --retry-errors, idempotency."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_support import (
    cli_command,
    committed_rows,
    comparable,
    invoke_run,
    prompts_table,
    read_rows,
    write_parquet,
)

from llvm_batch.batch import run_batch
from llvm_batch.server import Faults

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

MODEL = "llvm-model-1"
FAST = {"retry_delay": 0.005, "progress": False, "flush_interval": 0.2}


def committed_ids(staging: Path) -> set[int]:
    manifest = json.loads((staging / "manifest.json").read_text())
    ids: set[int] = set()
    for part in manifest["parts"]:
        ids.update(pq.read_table(staging / part["file"], columns=["id"]).column("id").to_pylist())
    return ids


def start_run(source: Path, out: Path, url: str) -> subprocess.Popen[str]:
    args = cli_command(
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        MODEL,
        "--base-url",
        url,
        "--concurrency",
        "4",
        "--chunk-size",
        "20",
        "--flush-interval",
        "0.1",
    )
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_commits(
    staging: Path, rows: int, proc: subprocess.Popen[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while committed_rows(staging) < rows:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run committed nothing in time"
        time.sleep(0.02)


@pytest.mark.parametrize("wait_rows", [40, 200])
def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, make_server, wait_rows: int
) -> None:
    rows = 400
    server = make_server(faults=Faults(latency=0.01))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(rows, empty_every=13))
    expected_out = tmp_path / "expected.parquet"
    assert (
        run_batch(
            source, expected_out, model=MODEL, base_url=server.url, concurrency=8, **FAST
        ).exit_code
        == 0
    )
    server.server.reset_stats()

    out = tmp_path / "out.parquet"
    staging = tmp_path / "out.parquet.llvm-staging"
    proc = start_run(source, out, server.url)
    wait_for_commits(staging, wait_rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert not out.exists()
    done_before = committed_rows(staging)
    committed = committed_ids(staging)
    sent_before = server.stats.inference_requests
    assert 0 < done_before < rows and len(committed) == done_before

    result = invoke_run(source, server.url, out=out)

    assert result.exit_code == 0, result.output
    assert comparable(read_rows(out)) == comparable(read_rows(expected_out))
    assert not staging.exists()
    sent_by_resume = server.stats.inference_requests - sent_before
    # committed rows are not sent again; every other row with a prompt is sent once
    final = read_rows(out)
    expected = sum(1 for r in final if r["id"] not in committed and r["llvm_status"] != "skipped")
    assert sent_by_resume == expected
    assert sent_before + sent_by_resume < 2 * sum(1 for r in final if r["llvm_status"] == "ok")
    assert f"resumed {done_before}" in result.output


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_flushes_keeps_checkpoint_exits_and_resumes(
    tmp_path: Path, make_server, signum: signal.Signals, code: int
) -> None:
    rows = 300
    server = make_server(faults=Faults(latency=0.01))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(rows))
    out = tmp_path / "out.parquet"
    staging = tmp_path / "out.parquet.llvm-staging"
    proc = start_run(source, out, server.url)
    wait_for_commits(staging, 20, proc)

    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=20)

    assert proc.returncode == code, stderr
    assert f"interrupted by {signum.name}" in stderr
    assert not out.exists()
    done = committed_rows(staging)
    assert done >= 20
    sent = server.stats.inference_requests
    assert sent - done <= 4 + 16 + 4  # what was in flight when the signal came, no more

    result = invoke_run(source, server.url, out=out)
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_rows(out)] == list(range(rows))
    assert server.stats.inference_requests - sent == rows - done


def _partial_checkpoint(tmp_path: Path, make_server) -> tuple[Path, Path, object]:
    """A run stopped early (its model vanished), leaving a checkpoint behind."""
    server = make_server(faults=Faults(latency=0.002))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(200))
    out = tmp_path / "out.parquet"
    threading.Timer(0.15, lambda: setattr(server.server, "models", [])).start()
    summary = run_batch(
        source, out, model=MODEL, base_url=server.url, concurrency=2, chunk_size=10, **FAST
    )
    assert summary.exit_code == 3
    assert (tmp_path / "out.parquet.llvm-staging" / "manifest.json").exists()
    server.server.models = [MODEL]
    return source, out, server


def test_changed_input_refuses_to_resume_unless_overwrite(tmp_path: Path, make_server) -> None:
    source, out, server = _partial_checkpoint(tmp_path, make_server)
    write_parquet(source, prompts_table(201))
    result = invoke_run(source, server.url, out=out)
    assert result.exit_code == 2
    assert "different input" in result.output and "--overwrite" in result.output
    result = invoke_run(source, server.url, "--overwrite", out=out)
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 201


def test_changed_options_refuse_to_resume(tmp_path: Path, make_server) -> None:
    source, out, server = _partial_checkpoint(tmp_path, make_server)
    result = invoke_run(source, server.url, "--template", "X {prompt}", out=out)
    assert result.exit_code == 2 and "different options" in result.output
    result = invoke_run(source, server.url, out=out)
    assert result.exit_code == 0, result.output


def test_a_part_written_but_not_in_the_manifest_is_ignored(tmp_path: Path, make_server) -> None:
    source, out, server = _partial_checkpoint(tmp_path, make_server)
    staging = tmp_path / "out.parquet.llvm-staging"
    listed = json.loads((staging / "manifest.json").read_text())["parts"]
    orphan = staging / "part-00000999-0000.parquet"
    orphan.write_bytes((staging / listed[0]["file"]).read_bytes())  # a crash before the manifest
    result = invoke_run(source, server.url, out=out)
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_rows(out)] == list(range(200))


def test_retry_errors_reruns_only_failed_rows(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(error_rate=0.3, seed=3))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(100))
    out = tmp_path / "out.parquet"
    first = run_batch(
        source, out, model=MODEL, base_url=server.url, max_retries=0, breaker=False, **FAST
    )
    before = read_rows(out)
    failed = [r["id"] for r in before if r["llvm_status"] == "error"]
    assert first.exit_code == 1 and 10 < len(failed) < 60
    server.set_faults(error_rate=0.0)
    server.server.reset_stats()

    result = invoke_run(source, server.url, "--retry-errors", out=out)

    assert result.exit_code == 0, result.output
    after = read_rows(out)
    assert server.stats.inference_requests == len(failed)
    assert [r["id"] for r in after] == list(range(100))
    assert all(r["llvm_status"] == "ok" for r in after)
    for old, new in zip(before, after, strict=True):
        if old["llvm_status"] == "ok":
            assert new == old  # kept exactly as it was, timings included
    assert pq.read_schema(out).names == pq.read_schema(tmp_path / "out.parquet").names


def test_idempotency_key_is_stable_across_retries_and_reruns(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(fail_first=1))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(30))
    out = tmp_path / "out.parquet"
    run_batch(source, out, model=MODEL, base_url=server.url, breaker=False, **FAST)
    keys = dict(server.stats.keys)
    assert len(keys) == 30 and set(keys.values()) == {2}
    server.server.reset_stats()
    run_batch(source, out, model=MODEL, base_url=server.url, breaker=False, overwrite=True, **FAST)
    assert dict(server.stats.keys).keys() == keys.keys()
    assert all(row["llvm_attempts"] == 2 for row in read_rows(out))
