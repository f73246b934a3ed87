"""What a run writes, and where: never over its input, every accepted name in the format it
says, a finished output checked against the job's fingerprint, values read back as written.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from batch_support import invoke, prompts_table, read_rows, write_parquet
from chaos_support import REFERENCE_MODEL

from llvm_batch.server import reference_output


def run(source: Path, out: Path | str, url: str, *extra: str):
    return invoke(
        "run", str(source), "-o", str(out), "-m", REFERENCE_MODEL, "--base-url", url,
        "--no-progress", *extra,
    )  # fmt: skip


# -- the input is never a write target -----------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "relative"])
def test_the_output_can_never_be_the_input(tmp_path: Path, server, how, monkeypatch) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    before = source.read_bytes()
    out: Path | str = source
    if how == "symlink":
        out = tmp_path / "link.parquet"
        out.symlink_to(source)
    elif how == "relative":
        monkeypatch.chdir(tmp_path)
        out = "./in.parquet"

    result = run(source, out, server.url, "--overwrite")

    assert result.exit_code == 2, result.output
    assert "is the input file" in result.output and "Traceback" not in result.output
    assert source.read_bytes() == before
    assert server.stats.inference_requests == 0


# -- a finished output carries the job's fingerprint ---------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".csv.gz"])
def test_a_finished_output_rerun_as_is_is_already_complete(tmp_path: Path, server, suffix) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / f"out{suffix}"
    assert run(source, out, server.url).exit_code == 0
    sent, written = server.stats.inference_requests, out.read_bytes()

    again = run(source, out, server.url)

    assert again.exit_code == 0, again.output
    assert "already_complete" in again.output
    assert server.stats.inference_requests == sent and out.read_bytes() == written


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--template", "Say: {prompt}"], "template"),
        (["--max-tokens", "3"], "max_tokens"),
        (["--prefix", "x_"], "prefix"),
    ],
)
def test_a_finished_output_rerun_with_other_options_is_refused(
    tmp_path: Path, server, suffix, change, named
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / f"out{suffix}"
    assert run(source, out, server.url).exit_code == 0
    sent, written = server.stats.inference_requests, out.read_bytes()

    again = run(source, out, server.url, *change)

    assert again.exit_code == 2, again.output
    assert "finished run of this input with different options" in again.output
    assert named in again.output and "--overwrite" in again.output
    assert server.stats.inference_requests == sent and out.read_bytes() == written
    redone = run(source, out, server.url, *change, "--overwrite")
    assert redone.exit_code == 0, redone.output
    assert server.stats.inference_requests == sent + 5


def test_a_finished_output_rerun_with_another_model_is_refused(tmp_path: Path, make_server) -> None:
    server = make_server(models=[REFERENCE_MODEL, "llvm-model-2"])
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    out = tmp_path / "out.parquet"
    assert run(source, out, server.url).exit_code == 0
    again = invoke(
        "run", str(source), "-o", str(out), "-m", "llvm-model-2", "--base-url", server.url,
    )  # fmt: skip
    assert again.exit_code == 2 and "different options (model)" in again.output
    assert {r["llvm_model"] for r in read_rows(out)} == {REFERENCE_MODEL}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_edited_text_output_is_not_taken_for_a_finished_run(
    tmp_path: Path, server, suffix
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    out = tmp_path / f"out{suffix}"
    assert run(source, out, server.url).exit_code == 0
    out.write_text(out.read_text() + ("extra,row\n" if suffix == ".csv" else "{}\n"))

    again = run(source, out, server.url)

    assert again.exit_code == 2 and "not a finished run" in again.output


# -- every accepted output name is written in the format it says ---------------------------

OPENERS = {"": open, ".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_back(path: Path, fmt: str, compression: str) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if compression == ".zst":
        stream = pa.CompressedInputStream(pa.OSFile(str(path)), "zstd")
        data = stream.read()
    else:
        with OPENERS[compression](path, "rb") as handle:
            data = handle.read()
    if fmt == "csv":
        return pacsv.read_csv(pa.BufferReader(data)).to_pylist()
    return [json.loads(line) for line in data.decode().splitlines()]


SUFFIXES = [
    (name + compression, fmt, compression)
    for name, fmt in [
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
    ]
    for compression in ["", ".gz", ".bz2", ".xz", ".zst"]
] + [(".parquet", "parquet", ""), (".pq", "parquet", "")]


@pytest.mark.parametrize(("suffix", "fmt", "compression"), SUFFIXES)
def test_every_accepted_output_name_is_written_as_it_says(
    tmp_path: Path, server, suffix, fmt, compression
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    out = tmp_path / f"out{suffix}"

    result = run(source, out, server.url)

    assert result.exit_code == 0, result.output
    rows = read_back(out, fmt, compression)
    assert [r["prompt"] for r in rows] == [f"question {i}" for i in range(4)]
    assert [r["llvm_output"] for r in rows] == [
        reference_output(REFERENCE_MODEL, f"question {i}") for i in range(4)
    ]


@pytest.mark.parametrize(
    ("out", "why"),
    [
        ("out.parquet.gz", "compresses itself"),
        ("memory://bucket/out.parquet", "is a URL"),
        ("a-file/out.parquet", "directory does not exist"),
        ("out.txt", "can't tell the format"),
    ],
)
def test_an_output_that_cant_be_written_is_refused_before_sending(
    tmp_path: Path, server, out, why
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    (tmp_path / "a-file").write_text("a file, not a directory")
    target = out if "://" in out else str(tmp_path / out)

    result = run(source, target, server.url)

    assert result.exit_code == 2, result.output
    assert why in result.output and "Traceback" not in result.output
    assert server.stats.inference_requests == 0


def test_an_unwritable_summary_path_is_refused_before_sending(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    out = tmp_path / "out.parquet"

    result = run(source, out, server.url, "--summary-json", str(tmp_path / "no" / "s.json"))

    assert result.exit_code == 2 and "--summary-json" in result.output
    assert server.stats.inference_requests == 0 and not out.exists()


# -- values read back equal the values written ---------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_categorical_columns_read_back_as_written(tmp_path: Path, server, suffix) -> None:
    topics = pa.array(["red", "green", "blue", "red"]).dictionary_encode()
    codes = pa.array([3, 1, 3, 2], pa.int64()).dictionary_encode()
    table = prompts_table(4).append_column("colour", topics).append_column("code", codes)
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / f"out{suffix}"

    assert run(source, out, server.url).exit_code == 0

    rows = read_rows(out)
    assert [r["colour"] for r in rows] == ["red", "green", "blue", "red"]
    assert [r["code"] for r in rows] == [3, 1, 3, 2]


def test_missing_output_directories_are_created(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(2))
    out = tmp_path / "out" / "2025-01-02" / "out.parquet"

    assert run(source, out, server.url).exit_code == 0
    assert len(read_rows(out)) == 2


def test_an_output_finished_before_outputs_carried_options_is_still_complete(
    tmp_path: Path, server
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    out = tmp_path / "out.parquet"
    assert run(source, out, server.url).exit_code == 0
    table = pq.read_table(out)
    record = json.loads(table.schema.metadata[b"llvm_batch"])
    old = {"input": record["input"], "rows": record["rows"]}  # what earlier versions wrote
    pq.write_table(table.replace_schema_metadata({b"llvm_batch": json.dumps(old).encode()}), out)
    sent = server.stats.inference_requests

    again = run(source, out, server.url)

    assert again.exit_code == 0 and "already_complete" in again.output
    assert server.stats.inference_requests == sent
