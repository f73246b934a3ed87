"""The cron wrapper: one run at a time, a dated log, exit codes passed on, resume after kill -9.

Also checks that the sample job files of both pipelines are valid ``llvm-batch run`` jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import psutil
import pytest
from batch_support import committed_rows, invoke, prompts_table, read_rows, write_parquet
from pipelines_support import REPO

from llvm_batch.server import Faults, ServerThread, reference_output

WRAPPER = REPO / "pipelines" / "cron" / "llvm-batch-cron.sh"
MODEL = "llvm-model-1"


def write_job(tmp_path: Path, url: str, rows: int, **options: object) -> Path:
    """``in.parquet`` (``rows`` prompts) -> ``out.parquet`` at ``url``, slow enough to interrupt."""
    write_parquet(tmp_path / "in.parquet", prompts_table(rows))
    settings = {
        "input": "in.parquet",
        "output": "out.parquet",
        "model": MODEL,
        "base-url": url,
        "concurrency": 2,
        "chunk-size": 20,
        "flush-interval": 0.1,
        **options,
    }
    job = tmp_path / "job.toml"
    job.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return job


def cron_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLVM_")}
    env["LLVM_BATCH_BIN"] = str(Path(sys.executable).parent / "llvm-batch")
    env["LLVM_BATCH_LOG_DIR"] = str(tmp_path / "logs")
    return env


def tick(tmp_path: Path, job: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """One cron tick, to the end."""
    return subprocess.run(
        [str(WRAPPER), str(job), *flags],
        env=cron_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_tick(tmp_path: Path, job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(WRAPPER), str(job)],
        env=cron_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_text(tmp_path: Path, job: Path, before: date) -> str:
    """The dated log of ``job``: NAME-YYYY-MM-DD.log, for a day from ``before`` to today."""
    days = {before, date.today()}
    logs = [tmp_path / "logs" / f"{job.stem}-{day:%Y-%m-%d}.log" for day in sorted(days)]
    found = [log for log in logs if log.exists()]
    assert found, f"no log among {[log.name for log in logs]}"
    return "".join(log.read_text() for log in found)


def wait_for_commits(staging: Path, rows: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while committed_rows(staging) < rows:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run committed nothing in time"
        time.sleep(0.02)


def start_run(
    tmp_path: Path, make_server: Callable[..., ServerThread], rows: int, latency: float
) -> tuple[ServerThread, Path, subprocess.Popen[str]]:
    """A slow server, a job of ``rows`` rows, and a tick running it that has committed 20%."""
    server = make_server(faults=Faults(latency=latency))
    job = write_job(tmp_path, server.url, rows)
    first = start_tick(tmp_path, job)
    wait_for_commits(tmp_path / "out.parquet.llvm-staging", rows // 5, first)
    return server, job, first


@pytest.mark.parametrize("pipeline", ["airflow", "cron"])
def test_the_sample_job_files_are_valid_jobs(tmp_path: Path, pipeline: str) -> None:
    job = REPO / "pipelines" / pipeline / "job.toml"
    result = invoke("run", "--config", str(job), "--dry-run", "-o", str(tmp_path / "x.parquet"))
    assert result.exit_code == 0, result.output
    assert "dry run: 24 rows" in result.output


def test_a_tick_during_a_run_exits_0_at_once_and_the_run_goes_on(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    rows = 100
    today = date.today()
    server, job, first = start_run(tmp_path, make_server, rows, latency=0.05)

    second = tick(tmp_path, job)

    assert second.returncode == 0
    assert (second.stdout, second.stderr) == ("", "")
    assert first.poll() is None  # the second tick did not wait for the first
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0 and (out, err) == ("", "")
    log = log_text(tmp_path, job, today)
    assert log.count("skipped: the previous run of") == 1
    assert log.count(" start: ") == 1 and log.count(" exit 0") == 1
    assert f"complete: {rows} rows" in log
    assert len(read_rows(tmp_path / "out.parquet")) == rows
    assert server.stats.inference_requests == rows == len(server.stats.keys)


def test_the_lock_lasts_as_long_as_llvm_batch_even_if_the_wrapper_dies(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    rows = 100
    today = date.today()
    server, job, first = start_run(tmp_path, make_server, rows, latency=0.05)
    (llvm_batch,) = psutil.Process(first.pid).children()

    first.kill()  # the wrapper goes; its llvm-batch keeps the lock it inherited
    first.communicate(timeout=30)
    second = tick(tmp_path, job)

    assert second.returncode == 0
    assert llvm_batch.is_running()
    assert "skipped: the previous run of" in log_text(tmp_path, job, today)
    llvm_batch.wait(timeout=60)
    assert len(read_rows(tmp_path / "out.parquet")) == rows
    assert server.stats.inference_requests == rows == len(server.stats.keys)


def test_a_run_killed_with_sigkill_is_resumed_by_the_next_tick(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    rows = 200
    staging = tmp_path / "out.parquet.llvm-staging"
    today = date.today()
    server, job, first = start_run(tmp_path, make_server, rows, latency=0.03)
    (llvm_batch,) = [
        child for child in psutil.Process(first.pid).children() if "run" in child.cmdline()
    ]

    llvm_batch.send_signal(signal.SIGKILL)

    out, err = first.communicate(timeout=30)
    assert first.returncode == 128 + signal.SIGKILL
    assert err.startswith(f"llvm-batch-cron: {job} exited 137; see ") and err.count("\n") == 1
    kept = committed_rows(staging)
    assert 40 <= kept < rows
    server.server.reset_stats()

    again = tick(tmp_path, job)

    assert again.returncode == 0, again.stderr
    written = read_rows(tmp_path / "out.parquet")
    assert [row["id"] for row in written] == list(range(rows))
    assert [row["llvm_output"] for row in written] == [
        reference_output(MODEL, f"question {i}") for i in range(rows)
    ]
    assert not staging.exists()
    assert server.stats.inference_requests == rows - kept  # committed rows were not re-sent
    log = log_text(tmp_path, job, today)
    assert " exit 137\n" in log and f"resumed {kept}" in log and log.endswith(" exit 0\n")


def test_exit_codes_pass_through_and_only_failures_print(tmp_path: Path, closed_url: str) -> None:
    job = write_job(tmp_path, closed_url, 5, **{"max-outage": 0.3, "retry-delay": 0.01})
    today = date.today()

    stopped = tick(tmp_path, job)

    assert stopped.returncode == 3
    assert stopped.stdout == ""
    assert stopped.stderr.startswith(f"llvm-batch-cron: {job} exited 3; see {tmp_path}/logs/")
    log = log_text(tmp_path, job, today)
    assert "incomplete: " in log and log.endswith(" exit 3\n")

    usage = tick(tmp_path, job, "--max-retries", "-1")
    assert usage.returncode == 2 and "exited 2" in usage.stderr

    missing = tick(tmp_path, tmp_path / "missing.toml")
    assert missing.returncode == 2 and missing.stderr.startswith("usage: ")
