"""One writer per output: a second run on the same output exits 3 (or waits with
--wait-for-lock), sends nothing and sweeps nothing of the first run's checkpoint.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from batch_support import (
    cli_command,
    committed_rows,
    invoke,
    prompts_table,
    read_rows,
    staging_of,
    wait_until,
    write_parquet,
)
from chaos_support import REFERENCE_MODEL

from llvm_batch.batch.lock import OutputLock
from llvm_batch.server import Faults


def args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "run", str(source), "-o", str(out), "-m", REFERENCE_MODEL, "--base-url", url,
        "--no-progress", *extra,
    ]  # fmt: skip


def test_a_second_run_on_a_locked_output_exits_3_sending_nothing(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(20))
    out = tmp_path / "out.parquet"
    holder = OutputLock(str(staging_of(out)))
    assert holder.try_acquire()
    (staging_of(out) / "part-00000000-0000.parquet").write_bytes(b"another run's part")
    try:
        for extra in ([], ["--overwrite"], ["--retry-errors"]):
            result = invoke(*args(source, out, server.url, *extra))
            assert result.exit_code in (2, 3), result.output
            if extra != ["--retry-errors"]:  # that one needs a finished output first
                assert result.exit_code == 3
                assert "another llvm-batch run is writing" in result.output
                assert "--wait-for-lock" in result.output
    finally:
        holder.release()
    assert server.stats.inference_requests == 0 and not out.exists()
    # the other run's files were not swept
    assert (staging_of(out) / "part-00000000-0000.parquet").read_bytes() == b"another run's part"


def test_wait_for_lock_waits_then_runs(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(20))
    out = tmp_path / "out.parquet"
    holder = OutputLock(str(staging_of(out)))
    assert holder.try_acquire()
    waiting = subprocess.Popen(
        cli_command(*args(source, out, server.url, "--wait-for-lock")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert "waiting for another llvm-batch run to finish writing" in line
        assert waiting.poll() is None and server.stats.requests == 0
    finally:
        holder.release(remove_if_empty=True)
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    assert len(read_rows(out)) == 20 and server.stats.inference_requests == 20


def test_two_live_runs_on_one_output_send_each_row_once(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(latency=0.02))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(200))
    out = tmp_path / "out.parquet"
    first = subprocess.Popen(
        cli_command(*args(source, out, server.url, "-c", "2", "--chunk-size", "10")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: committed_rows(staging_of(out)) >= 10, "the first run's first part")

    second = invoke(*args(source, out, server.url, "--overwrite"))

    assert second.exit_code == 3 and "another llvm-batch run" in second.output
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert [r["id"] for r in read_rows(out)] == list(range(200))
    assert server.stats.inference_requests == 200


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(latency=0.05))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(100))
    out = tmp_path / "out.parquet"
    first = subprocess.Popen(
        cli_command(*args(source, out, server.url, "-c", "1", "--chunk-size", "5")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: committed_rows(staging_of(out)) >= 5, "a committed part")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    again = invoke(*args(source, out, server.url))

    assert again.exit_code == 0, again.output
    assert [r["id"] for r in read_rows(out)] == list(range(100))
    assert sys.platform != "win32"
