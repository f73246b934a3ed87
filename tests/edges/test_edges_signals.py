"""SIGINT/SIGTERM in every phase of a run: the documented code (130/143), one line, no
traceback and no leftover temp file.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from batch_support import cli_command, prompts_table, staging_of, wait_until, write_parquet
from chaos_support import MODEL, status

from llvm_batch.batch.columns import result_schema
from llvm_batch.batch.lock import OutputLock
from llvm_batch.batch.writers import OutputWriter, WriteInterrupted, write_output

SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def start(source: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command("run", str(source), "-o", str(out), "-m", MODEL, "--base-url", url,
                    "--no-progress", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def assert_stopped_cleanly(process: subprocess.Popen[str], code: int, out: Path) -> str:
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert (
        "Traceback" not in stderr and f"interrupted by {signal.Signals(code - 128).name}" in stderr
    )
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    return stderr


@pytest.mark.parametrize(("signum", "code"), SIGNALS)
def test_a_signal_while_waiting_for_the_server(tmp_path: Path, scripted_thread, signum, code):
    app = scripted_thread(lambda seen, request: status(503, "warming up"))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / "out.parquet"
    running = start(source, out, app.url, "--max-outage", "600")
    wait_until(lambda: len(app.seen) >= 2, "the pre-flight check to be retried")

    running.send_signal(signum)

    assert_stopped_cleanly(running, code, out)
    assert [seen.method for seen in app.seen] == ["GET"] * len(app.seen)  # no row went out


@pytest.mark.parametrize(("signum", "code"), SIGNALS)
def test_a_signal_while_waiting_for_the_lock(tmp_path: Path, server, signum, code) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / "out.parquet"
    holder = OutputLock(str(staging_of(out)))
    assert holder.try_acquire()
    try:
        running = start(source, out, server.url, "--wait-for-lock")
        assert running.stderr is not None
        assert "waiting for another llvm-batch run" in running.stderr.readline()

        running.send_signal(signum)

        assert_stopped_cleanly(running, code, out)
    finally:
        holder.release()
    assert server.stats.requests == 0


def test_a_stop_during_assembly_leaves_no_output_and_no_temp_file(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("prompt", pa.string()), *result_schema()])
    empty = schema.empty_table()
    out = tmp_path / "out.csv.gz"
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(WriteInterrupted):
        write_output(
            [empty, empty, empty],
            OutputWriter(str(out), "csv", schema, compression="gzip"),
            stop=stop,
        )

    assert not out.exists() and list(tmp_path.iterdir()) == []
