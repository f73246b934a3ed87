"""A daily ``llvm-batch run`` under Airflow 3: exit 3 is retried and resumes, exit 1/2 fail at once.

The job is a TOML file (every ``llvm-batch run`` option, ``input`` included); each day writes
``{output_dir}/{ds}/{output_name}``, and the run summary is the task's XCom ``return_value``.
Settings are DAG params, overridable per run; their defaults come from the DAG processor's
environment: ``LLVM_BATCH_JOB_FILE`` (default: ``../job.toml``, a sample),
``LLVM_BATCH_OUTPUT_DIR``, ``LLVM_BATCH_RETRIES`` (3) and ``LLVM_BATCH_RETRY_DELAY_S`` (600).
``LLVM_BATCH_BIN`` (default ``llvm-batch``) is read on the worker, so llvm-batch can live in
its own virtualenv, apart from Airflow's.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import tempfile
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

log = logging.getLogger("llvm_batch_daily")

SAMPLE_JOB = Path(__file__).resolve().parent.parent / "job.toml"
DEFAULT_OUTPUT_DIR = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "llvm-batch"
RETRIES = int(os.environ.get("LLVM_BATCH_RETRIES", "3"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("LLVM_BATCH_RETRY_DELAY_S", "600")))
# How long llvm-batch gets to flush its checkpoint when Airflow stops the task.
STOP_GRACE_S = 60

# Why a TaskFlow task and not BashOperator: BashOperator turns every non-zero exit into a
# retryable failure (and exit 99 into "skipped"), so exit 1 and 2 would be retried, and a retry
# of an exit-1 day would even pass, since the finished output is already there. Here the exit
# code is ours to map: AirflowFailException fails the task without consulting `retries`; any
# other exception is an ordinary failure that Airflow retries. llvm-batch never exits 99, and
# nothing here gives 99 a meaning.
FAIL_WITHOUT_RETRY = {
    1: "the run finished, but its error rate is above max-error-rate",
    2: "usage, configuration or input error; nothing was sent",
}
# Exit 3 (stopped early, checkpoint kept), 130/143 (interrupted after flushing) and deaths by
# signal are retried: the retry runs the same command, which resumes from the checkpoint.


@task(multiple_outputs=False)
def run_job(job_file: str, output: str, input_path: str = "") -> dict[str, Any]:
    """Run the job into ``output``; return its summary (also for a day that was already done)."""
    command = [*shlex.split(os.environ.get("LLVM_BATCH_BIN", "llvm-batch")), "run"]
    if input_path:
        command.append(input_path)
    command += ["--config", job_file, "--output", output]
    with tempfile.TemporaryDirectory(prefix="llvm-batch-") as tmp:
        summary_file = os.path.join(tmp, "summary.json")
        code, tail = _run_logged([*command, "--summary-json", summary_file])
        summary = _read_json(summary_file)
    if code == 0:
        # A finished day re-run prints `already_complete`, sends nothing and exits 0.
        return summary
    detail = f"llvm-batch exited {code} for {output}: {_reason(summary, tail)}"
    if code in FAIL_WITHOUT_RETRY:
        raise AirflowFailException(f"{FAIL_WITHOUT_RETRY[code]} ({detail})")
    raise AirflowException(f"{detail}; a retry resumes from the checkpoint")


def _run_logged(command: list[str]) -> tuple[int, list[str]]:
    """Run ``command``, copying its output to the task log; its exit code and last lines."""
    log.info("running %s", shlex.join(command))
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as exc:
        raise AirflowFailException(f"can't run {command[0]!r} ({exc}); set LLVM_BATCH_BIN") from exc
    tail: deque[str] = deque(maxlen=3)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("%s", line.rstrip())
            if line.strip():
                tail.append(line.strip())
        return proc.wait(), list(tail)
    except BaseException:
        # Airflow is stopping the task (timeout, marked failed, shutdown): SIGTERM lets
        # llvm-batch commit its finished rows, so the next try loses nothing.
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _reason(summary: dict[str, Any], tail: list[str]) -> str:
    if summary.get("stop_reason"):
        return str(summary["stop_reason"])
    if summary.get("error_types"):
        return (
            f"error rate {summary['error_rate']} > {summary['max_error_rate']}, "
            f"error types {summary['error_types']}"
        )
    return " / ".join(tail) or "no output"


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dag(
    dag_id="llvm_batch_daily",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY},
    # A missing {{ ds }} (a run without a logical date) must fail, not write to "<dir>//...".
    template_undefined=jinja2.StrictUndefined,
    params={
        "job_file": Param(
            os.environ.get("LLVM_BATCH_JOB_FILE", str(SAMPLE_JOB)),
            type="string",
            description="TOML job file for `llvm-batch run --config`.",
        ),
        "output_dir": Param(
            os.environ.get("LLVM_BATCH_OUTPUT_DIR", str(DEFAULT_OUTPUT_DIR)),
            type="string",
            description="Each day writes {output_dir}/{ds}/{output_name}.",
        ),
        "output_name": Param("prompts.llvm.parquet", type="string"),
        "input": Param("", type="string", description="Overrides the job file's `input`."),
    },
    tags=["llvm-batch"],
    doc_md=__doc__,
)
def llvm_batch_daily() -> None:
    run_job(
        job_file="{{ params.job_file }}",
        output="{{ params.output_dir }}/{{ ds }}/{{ params.output_name }}",
        input_path="{{ params.input }}",
    )


llvm_batch_daily()
