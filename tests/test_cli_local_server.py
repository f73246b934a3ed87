"""`llvm-batch run --local-server`: the CLI serves the reference server for the run, then stops."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from batch_support import invoke, prompts_table, read_rows, write_parquet

from llvm_batch.server import THREAD_NAME, reference_output

MODEL = "llvm-model-1"


def server_threads() -> int:
    return sum(thread.name == THREAD_NAME for thread in threading.enumerate())


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LLVM_PROTOCOL", "LLVM_BASE_URL", "LLVM_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert server_threads() == 0
    return write_parquet(tmp_path / "in.parquet", prompts_table(4))


@pytest.mark.parametrize(
    "flags", [[], ["--protocol", "openai"], ["--protocol", "openai-completions"]]
)
def test_the_local_server_speaks_the_protocol_in_use_and_stops(source: Path, flags) -> None:
    out = source.with_name("out.parquet")
    result = invoke("run", str(source), "--local-server", "-m", MODEL, "-o", str(out), *flags)

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows] == ["ok"] * 4
    if not flags:  # the LLVM wire sends the prompt as it is
        assert [r["llvm_output"] for r in rows] == [
            reference_output(MODEL, r["prompt"]) for r in rows
        ]
    assert all(r["prompt"] in r["llvm_output"] for r in rows)
    assert server_threads() == 0


def test_the_protocol_may_come_from_the_environment(source: Path, monkeypatch, closed_url) -> None:
    out = source.with_name("out.parquet")
    monkeypatch.setenv("LLVM_PROTOCOL", "openai")
    monkeypatch.setenv("LLVM_BASE_URL", closed_url)  # --local-server wins over the environment
    result = invoke("run", str(source), "--local-server", "-m", MODEL, "-o", str(out))

    assert result.exit_code == 0, result.output
    assert {r["llvm_status"] for r in read_rows(out)} == {"ok"}
    assert server_threads() == 0


def test_a_bad_protocol_in_the_environment_exits_2_and_starts_nothing(source, monkeypatch) -> None:
    out = source.with_name("out.parquet")
    monkeypatch.setenv("LLVM_PROTOCOL", "soap")
    result = invoke("run", str(source), "--local-server", "-m", MODEL, "-o", str(out))

    assert result.exit_code == 2
    assert "protocol must be one of llvm, openai" in result.output
    assert "got 'soap' (from LLVM_PROTOCOL)" in result.output
    assert not out.exists() and server_threads() == 0


def test_local_server_with_base_url_is_refused(source: Path, closed_url: str) -> None:
    out = source.with_name("out.parquet")
    job = source.with_name("job.toml")
    job.write_text(f'base-url = "{closed_url}"\nlocal-server = true\n')
    flags = invoke(
        "run", str(source), "--local-server", "--base-url", closed_url, "-m", MODEL, "-o", str(out)
    )
    from_file = invoke("run", str(source), "--config", str(job), "-m", MODEL, "-o", str(out))

    for result in (flags, from_file):
        assert result.exit_code == 2
        assert "--local-server runs the bundled reference server" in result.output
        assert "drop --base-url" in result.output
    assert not out.exists() and server_threads() == 0


@pytest.mark.parametrize(
    ("model", "code", "says"),
    [(None, 2, "no model given"), ("no-such-model", 2, "model 'no-such-model' not found")],
)
def test_the_local_server_stops_when_the_run_fails(source: Path, model, code, says) -> None:
    out = source.with_name("out.parquet")
    args = ["run", str(source), "--local-server", "-o", str(out)]
    result = invoke(*args, *(["-m", model] if model else []))

    assert result.exit_code == code, result.output
    assert says in result.output
    assert server_threads() == 0


def test_a_dry_run_with_the_local_server_sends_nothing(source: Path) -> None:
    out = source.with_name("out.parquet")
    result = invoke("run", str(source), "--local-server", "-m", MODEL, "-o", str(out), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "question 0" in result.output
    assert not out.exists() and server_threads() == 0


def test_the_server_is_imported_only_when_a_local_server_starts(source: Path) -> None:
    dry_run = ["run", str(source), "--local-server", "--dry-run"]
    code = f"""
import sys
from llvm_batch.cli import main
for args in (["--help"], ["run", "--help"], {dry_run!r}):
    try:
        main(args)
    except SystemExit:
        pass
    print("imported:", "aiohttp" in sys.modules, "llvm_batch.server" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("imported:")]
    assert len(lines) == 3, done.stdout + done.stderr
    assert lines[0] == "imported: False False"  # llvm-batch --help
    assert lines[1].endswith(" False")  # run --help: the client maybe, not the server
    assert lines[2].endswith(" False")  # a dry run sends nothing, so no server starts
