"""Bad input files: each ends in exit 2 with a message naming the file and what is wrong with
it, sends nothing, and leaves an existing output (and checkpoint) exactly as it was, with or
without ``--overwrite``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_support import cli_command, invoke_run, prompts_table

from llvm_batch.server import ServerThread

MODEL = "llvm-model-1"


def truncated_parquet(path: Path) -> Path:
    target = path / "in.parquet"
    pq.write_table(prompts_table(50), target)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def ragged_csv(path: Path) -> Path:
    target = path / "in.csv"
    target.write_text("id,prompt\n1,first\n2,second,surplus\n3,third\n")
    return target


def broken_jsonl(path: Path) -> Path:
    target = path / "in.jsonl"
    target.write_text('{"prompt": "a"}\n{"prompt": "b"\n{"prompt": "c"}\n')
    return target


def empty(suffix: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        target = path / f"in{suffix}"
        target.write_bytes(b"")
        return target

    return make


def a_directory(path: Path) -> Path:
    target = path / "in.parquet"
    target.mkdir()
    (target / "part-0.parquet").write_bytes(b"")
    return target


def truncated_gzip_csv(path: Path) -> Path:
    target = path / "in.csv.gz"
    data = gzip.compress(("prompt\n" + "".join(f"q {i}\n" for i in range(3000))).encode())
    target.write_bytes(data[: len(data) // 2])
    return target


def not_utf8_csv(path: Path) -> Path:
    target = path / "in.csv"
    target.write_bytes("id,prompt\n1,caf\xe9\n".encode("latin-1"))
    return target


def duplicate_columns_csv(path: Path) -> Path:
    target = path / "in.csv"
    target.write_text("prompt,note,note\nhello,a,b\n")
    return target


def reserved_column_parquet(path: Path) -> Path:
    target = path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "__llvm_row": [7, 8]}), target)
    return target


CASES = {
    "truncated parquet": (truncated_parquet, "as parquet", "magic bytes not found"),
    "ragged csv": (ragged_csv, "as csv", "Expected 2 columns, got 3"),
    "broken jsonl": (broken_jsonl, "as jsonl", "JSON parse error"),
    "empty parquet": (empty(".parquet"), "as parquet", "0 bytes"),
    "empty csv": (empty(".csv"), "as csv", "Empty CSV file"),
    "empty jsonl": (empty(".jsonl"), "as jsonl", "Empty JSON"),
    "directory": (a_directory, "is a directory", "not a file"),
    "truncated gzip": (truncated_gzip_csv, "as csv", "ended before the end-of-stream"),
    "not utf-8": (not_utf8_csv, "as csv", "invalid UTF8"),
    "duplicate columns": (duplicate_columns_csv, "more than one column named", "'note'"),
    "reserved column": (reserved_column_parquet, "'__llvm_row'", "rename that column"),
}


@pytest.fixture(scope="module")
def server():
    with ServerThread(host="127.0.0.1", port=0) as running:
        yield running


def earlier_work(tmp_path: Path) -> tuple[Path, dict[Path, bytes]]:
    """An existing output and a checkpoint beside it: what a bad run must not touch."""
    out = tmp_path / "out.parquet"
    pq.write_table(pa.table({"prompt": ["old"], "llvm_output": ["old answer"]}), out)
    staging = tmp_path / "out.parquet.llvm-staging"
    staging.mkdir()
    (staging / "manifest.json").write_text('{"version": 1, "parts": []}')
    return out, snapshot(out, staging)


def snapshot(*paths: Path) -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    for path in paths:
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            if item.is_file():
                files[item] = item.read_bytes()
    return files


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_exits_2_naming_file_and_problem_sends_nothing_overwrites_nothing(
    tmp_path: Path, server, case: str, overwrite: bool
) -> None:
    make, what, detail = CASES[case]
    source = make(tmp_path)
    out, before = earlier_work(tmp_path)
    requests_before = server.stats.requests

    result = invoke_run(
        source,
        server.url,
        *(["--overwrite"] if overwrite else []),
        out=out,
    )

    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("Error: ") and len(message.splitlines()) == 1, message
    assert repr(str(source)) in message
    assert what in message and detail in message
    assert server.stats.requests == requests_before
    assert snapshot(out, out.with_name(out.name + ".llvm-staging")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {source.name, out.name, out.name + ".llvm-staging"}
    )


def _drop_file_permission_override() -> list[str] | None:
    """A command prefix under which file permissions apply, or None if there is none."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    # Root reads any file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; without them the
    # owner's (empty) permission bits apply to root too.
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unreadable_input_exits_2_naming_it(tmp_path: Path, server) -> None:
    prefix = _drop_file_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable")
    source = tmp_path / "in.parquet"
    pq.write_table(prompts_table(5), source)
    source.chmod(0)
    out, before = earlier_work(tmp_path)
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", f"open({str(source)!r}, 'rb')"], capture_output=True
    )
    if probe.returncode == 0:
        pytest.skip("this sandbox lets even a capability-less root read a mode-000 file")
    requests_before = server.stats.requests
    args = ["run", str(source), "-o", str(out), "-m", MODEL, "--base-url", server.url]

    for extra in ([], ["--overwrite"]):
        result = subprocess.run(
            [*prefix, *cli_command(*args, *extra)], capture_output=True, text=True, timeout=60
        )

        assert result.returncode == 2, result.stderr
        assert f"can't read input {str(source)!r}: Permission denied" in result.stderr
        assert "Traceback" not in result.stderr
        assert server.stats.requests == requests_before
        assert snapshot(out, out.with_name(out.name + ".llvm-staging")) == before
