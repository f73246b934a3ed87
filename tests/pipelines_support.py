"""Helpers for the pipeline tests: Airflow in its own virtualenv, driven from a child process.

Airflow's dependencies clash with ours, so it lives in ``<repo>/.venv-airflow`` (or
``$LLVM_BATCH_AIRFLOW_VENV``), built on first use from the pinned version and constraints and
reused while they match. :class:`AirflowDriver` runs *this file* with that venv's Python: it
then reads one JSON command per line on stdin and answers one JSON line each, so Airflow's
slow start is paid once per test module. Only the standard library is imported at the top,
since both interpreters import this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "pipelines" / "airflow" / "dags"
AIRFLOW_VERSION = "3.3.2"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
CONSTRAINTS = REPO / "pipelines" / "airflow" / f"constraints-{PYTHON}.txt"
AIRFLOW_VENV = Path(os.environ.get("LLVM_BATCH_AIRFLOW_VENV") or REPO / ".venv-airflow")
#: Written last by a successful build; the venv is reused while it holds :func:`venv_spec`.
READY_MARK = ".llvm-batch-ready"
#: Seconds a first build may take (pip downloads Airflow and ~130 packages).
BUILD_TIMEOUT = 900


# -- the Airflow virtualenv ----------------------------------------------------------------


def venv_spec() -> str:
    """What the venv is built from; a change (new pin or constraints) forces a rebuild."""
    constraints = CONSTRAINTS.read_bytes() if CONSTRAINTS.exists() else b""
    digest = hashlib.sha256(constraints).hexdigest()[:16]
    return f"apache-airflow=={AIRFLOW_VERSION} python{PYTHON} constraints {digest}"


def venv_python(venv: Path = AIRFLOW_VENV) -> Path:
    return venv / "bin" / "python"


def venv_ready(venv: Path = AIRFLOW_VENV) -> bool:
    try:
        return (venv / READY_MARK).read_text() == venv_spec()
    except OSError:
        return False


def ensure_airflow_venv(venv: Path = AIRFLOW_VENV) -> Path:
    """The venv's Python, after building the venv if it is missing or out of date."""
    if venv_ready(venv):
        return venv_python(venv)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Never committed, whatever the project's .gitignore says.
    (venv / ".gitignore").write_text("*\n")
    install = [str(venv_python(venv)), "-m", "pip", "install", f"apache-airflow=={AIRFLOW_VERSION}"]
    if CONSTRAINTS.exists():
        install += ["-c", str(CONSTRAINTS)]
    log = venv / "build.log"
    with log.open("w") as out:
        done = subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"building the Airflow venv failed ({' '.join(install)}):\n{tail}")
    (venv / READY_MARK).write_text(venv_spec())
    return venv_python(venv)


def migrate_db(python: Path, env: dict[str, str]) -> None:
    """Create Airflow's metadata database (sqlite in AIRFLOW_HOME)."""
    airflow = python.parent / "airflow"
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of Airflow processes: a private AIRFLOW_HOME on sqlite, our DAG folder.

    The DAG runs this interpreter's ``llvm-batch``; LLVM_* settings of the caller are dropped
    so that every test names its own loopback server.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLVM_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        LLVM_BATCH_BIN=str(Path(sys.executable).parent / "llvm-batch"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class AirflowDriver:
    """This file running as a command server in the Airflow venv (see :func:`_serve`)."""

    def __init__(self, python: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_handle,
            env=env,
            text=True,
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._sent = 0  # commands are numbered; an answer names the command it answers
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._answers.put(line)
        self._answers.put(None)

    def send(self, command: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self._sent += 1
        self.proc.stdin.write(json.dumps({"command": command, "id": self._sent, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = 120) -> dict[str, Any]:
        """The answer to the last command sent; late answers to earlier ones are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no answer from Airflow in {timeout} s; log: {self.log}"
                ) from None
            if line is None:
                raise AssertionError(f"the Airflow driver died; log tail:\n{self.log_tail()}")
            answer: dict[str, Any] = json.loads(line)
            if answer.pop("id", None) == self._sent:
                break
        if "error" in answer:
            raise AssertionError(f"Airflow driver error:\n{answer['error']}")
        return answer

    def call(self, command: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        self.send(command, **args)
        return self.receive(timeout)

    def log_tail(self, lines: int = 60) -> str:
        self._log_handle.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_handle.close()


# -- the driver side (runs in the Airflow venv) --------------------------------------------


def _dagbag() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": str(dag.schedule),
            "catchup": dag.catchup,
            "params": {key: dag.params[key] for key in dag.params},
            "tasks": {
                task.task_id: {
                    "retries": task.retries,
                    "retry_delay_s": task.retry_delay.total_seconds(),
                    "operator": type(task).__name__,
                }
                for task in dag.tasks
            },
        }
    return {
        "dags": dags,
        "import_errors": bag.import_errors,
        "warnings": {k: list(v) for k, v in bag.captured_warnings.items()},
    }


def _dag_test(dag_id: str, logical_date: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``dag.test()`` one run; its state, each task's state and tries, and the XComs."""
    from datetime import datetime, timezone

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(DAGS_FOLDER)).dags[dag_id]
    day = datetime.fromisoformat(logical_date).replace(tzinfo=timezone.utc)
    run = dag.test(logical_date=day, run_conf=conf)
    answer: dict[str, Any] = {"state": str(run.state), "tasks": {}, "xcom": {}}
    with create_session() as session:
        where = (TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        for ti in session.scalars(select(TaskInstance).where(*where)):
            answer["tasks"][ti.task_id] = {"state": str(ti.state), "try_number": ti.try_number}
        xcoms = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id)
        for xcom in session.scalars(xcoms):
            answer["xcom"][f"{xcom.task_id}.{xcom.key}"] = XComModel.deserialize_value(xcom)
    return answer


COMMANDS = {"dagbag": _dagbag, "dag_test": _dag_test}


def _serve() -> None:
    """Answer JSON commands from stdin on the real stdout; everything else goes to stderr."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Airflow's and the tasks' logs must not mix with the answers
    for line in sys.stdin:
        request = json.loads(line)
        number = request.pop("id")
        try:
            answer = COMMANDS[request.pop("command")](**request)
        except Exception:
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps({**answer, "id": number}, default=str) + "\n")


if __name__ == "__main__":
    _serve()
