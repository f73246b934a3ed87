"""The Airflow DAG, run by Airflow itself (own venv, sqlite, ``dag.test()``) on loopback servers.

Exit 0 writes the day's output and returns the summary as XCom, and a re-run changes nothing;
exit 3 is retried by Airflow and the retry resumes; exit 1 and 2 fail without a retry.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest
from batch_support import committed_rows, prompts_table, read_rows, wait_until, write_parquet
from pipelines_support import (
    BUILD_TIMEOUT,
    REPO,
    AirflowDriver,
    airflow_env,
    ensure_airflow_venv,
    migrate_db,
    venv_ready,
)

from llvm_batch.server import Faults, ServerThread, reference_output

# The first run builds Airflow's venv inside the first test that needs it.
pytestmark = pytest.mark.timeout(240 if venv_ready() else BUILD_TIMEOUT + 240)

DAG_ID = "llvm_batch_daily"
MODEL = "llvm-model-1"
RETRIES = 2


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDriver]:
    """Airflow in its own venv and AIRFLOW_HOME, retrying the DAG's task twice, 2 s apart."""
    python = ensure_airflow_venv()
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home, LLVM_BATCH_RETRIES=str(RETRIES), LLVM_BATCH_RETRY_DELAY_S="2")
    migrate_db(python, env)
    driver = AirflowDriver(python, env, home / "airflow.log")
    yield driver
    driver.close()


def write_job(path: Path, source: Path, url: str, **options: Any) -> Path:
    """A job TOML: ``source`` through MODEL at ``url``, plus ``options`` (dashes or underscores)."""
    settings = {"input": str(source), "model": MODEL, "base-url": url, **options}
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def run_day(airflow: AirflowDriver, day: str, job: Path, out_dir: Path) -> dict[str, Any]:
    conf = {"job_file": str(job), "output_dir": str(out_dir)}
    return airflow.call("dag_test", dag_id=DAG_ID, logical_date=day, conf=conf)


def test_the_dag_folder_loads_without_errors_or_warnings(airflow: AirflowDriver) -> None:
    bag = airflow.call("dagbag")
    assert bag["import_errors"] == {}
    assert bag["warnings"] == {}
    dag = bag["dags"][DAG_ID]
    assert dag["schedule"] == "@daily" and dag["catchup"] is False
    assert dag["tasks"].keys() == {"run_job"}
    assert dag["tasks"]["run_job"]["retries"] == RETRIES  # from LLVM_BATCH_RETRIES
    assert dag["tasks"]["run_job"]["retry_delay_s"] == 2.0
    assert dag["params"]["job_file"] == str(REPO / "pipelines" / "airflow" / "job.toml")
    assert Path(dag["params"]["job_file"]).exists()


def test_a_day_writes_its_output_returns_the_summary_and_a_rerun_changes_nothing(
    airflow: AirflowDriver, server: ServerThread, tmp_path: Path
) -> None:
    rows = 30
    source = write_parquet(tmp_path / "in.parquet", prompts_table(rows, empty_every=7))
    job = write_job(tmp_path / "job.toml", source, server.url, concurrency=4)
    output = tmp_path / "out" / "2025-01-02" / "prompts.llvm.parquet"

    first = run_day(airflow, "2025-01-02", job, tmp_path / "out")

    assert first["state"] == "success"
    assert first["tasks"]["run_job"] == {"state": "success", "try_number": 1}
    written = read_rows(output)
    assert [row["id"] for row in written] == list(range(rows))
    for row in written:
        if row["prompt"]:
            assert row["llvm_status"] == "ok"
            assert row["llvm_output"] == reference_output(MODEL, row["prompt"])
        else:
            assert row["llvm_status"] == "skipped"
    summary = first["xcom"]["run_job.return_value"]
    skipped = rows // 7
    assert summary["status"] == "complete" and summary["exit_code"] == 0
    assert (summary["rows"], summary["ok"], summary["skipped"]) == (rows, rows - skipped, skipped)
    assert summary["output"] == str(output)
    sent = server.stats.inference_requests
    assert sent == rows - skipped
    before = (output.stat().st_mtime_ns, output.read_bytes())

    again = run_day(airflow, "2025-01-02", job, tmp_path / "out")

    assert again["state"] == "success"
    assert again["tasks"]["run_job"] == {"state": "success", "try_number": 1}
    summary = again["xcom"]["run_job.return_value"]
    assert summary["status"] == "already_complete" and summary["exit_code"] == 0
    assert summary["rows"] == rows
    assert server.stats.inference_requests == sent
    assert (output.stat().st_mtime_ns, output.read_bytes()) == before
    assert [p.name for p in output.parent.iterdir()] == [output.name]


def llvm_batch_processes(output: Path) -> list[psutil.Process]:
    """The live ``llvm-batch run`` processes writing ``output`` (any try of the task)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "run" in cmdline and str(output) in cmdline:
            found.append(proc)
    return found


@pytest.mark.parametrize(
    ("stop", "exit_code", "day"),
    [("server_gone", 3, "2025-01-03"), ("sigterm", 143, "2025-01-04")],
)
def test_a_stopped_run_is_retried_by_airflow_and_the_retry_resumes(
    airflow: AirflowDriver,
    make_server: Callable[..., ServerThread],
    tmp_path: Path,
    stop: str,
    exit_code: int,
    day: str,
) -> None:
    """Exit 3 (server gone past max-outage) and 143 (SIGTERM, e.g. a worker shutting down)."""
    rows = 300
    server = make_server(faults=Faults(latency=0.03))
    port = server.server.port
    source = write_parquet(tmp_path / "in.parquet", prompts_table(rows))
    job = write_job(
        tmp_path / "job.toml",
        source,
        server.url,
        concurrency=2,
        chunk_size=20,
        flush_interval=0.1,
        retry_delay=0.05,
        max_outage=1,
    )
    output = tmp_path / "out" / day / "prompts.llvm.parquet"
    staging = Path(f"{output}.llvm-staging")

    airflow.send(
        "dag_test",
        dag_id=DAG_ID,
        logical_date=day,
        conf={"job_file": str(job), "output_dir": str(tmp_path / "out")},
    )
    wait_until(lambda: committed_rows(staging) >= 40, "the first try committed rows")
    if stop == "server_gone":
        server.stop()  # connection refused from now on: the first try stops after max-outage
    else:
        (first_try,) = llvm_batch_processes(output)
        first_try.send_signal(signal.SIGTERM)
    wait_until(lambda: not llvm_batch_processes(output), "the first try ended")
    kept = committed_rows(staging)
    assert 40 <= kept < rows
    if stop == "server_gone":
        server = make_server(port=port)  # back before the retry, which comes 2 s later
    server.server.reset_stats()
    answer = airflow.receive(timeout=120)

    assert f"llvm-batch exited {exit_code} for {output}" in airflow.log.read_text()
    assert answer["state"] == "success"
    assert answer["tasks"]["run_job"] == {"state": "success", "try_number": 2}
    summary = answer["xcom"]["run_job.return_value"]
    assert summary["status"] == "complete" and summary["resumed"] == kept
    written = read_rows(output)
    assert [row["id"] for row in written] == list(range(rows))
    assert {row["llvm_status"] for row in written} == {"ok"}
    # the retry sent only what the first try had not committed, each row once
    assert len(server.stats.keys) == rows - kept
    assert server.stats.inference_requests == rows - kept


@pytest.mark.parametrize("exit_code", [1, 2])
def test_exit_1_and_exit_2_fail_the_task_without_a_retry(
    airflow: AirflowDriver, server: ServerThread, tmp_path: Path, exit_code: int
) -> None:
    if exit_code == 1:  # 3 rows of 10 refused with 422 (negative max_tokens): error rate 0.3
        table = pa.table({"prompt": [f"p{i}" for i in range(10)], "mt": [-1] * 3 + [5] * 7})
        options = {"max-tokens-column": "mt", "max-error-rate": 0.1}
    else:  # no prompt column: a usage error, nothing sent
        table = pa.table({"text": [f"p{i}" for i in range(10)]})
        options = {}
    source = write_parquet(tmp_path / "in.parquet", table)
    job = write_job(tmp_path / "job.toml", source, server.url, **options)
    day = f"2025-01-0{5 + exit_code}"
    output = tmp_path / "out" / day / "prompts.llvm.parquet"

    answer = run_day(airflow, day, job, tmp_path / "out")

    assert answer["state"] == "failed"
    # one try although RETRIES were left: a retry of exit 1 would even "pass" (already_complete)
    assert answer["tasks"]["run_job"] == {"state": "failed", "try_number": 1}
    assert f"llvm-batch exited {exit_code} for {output}" in airflow.log.read_text()
    assert "run_job.return_value" not in answer["xcom"]
    if exit_code == 1:
        assert server.stats.statuses[422] == 3 and server.stats.inference_requests == 7
        assert [row["llvm_status"] for row in read_rows(output)][:4] == ["error"] * 3 + ["ok"]
    else:
        assert server.stats.inference_requests == 0
        assert not output.exists()
