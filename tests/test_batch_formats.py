"""The batch runner end to end: formats in and out, prompt modes, skipped rows, dry run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from batch_support import (
    RESULT_COLUMNS,
    invoke,
    invoke_run,
    prompts_table,
    read_rows,
    write_parquet,
)

from llvm_batch.batch import run_batch
from llvm_batch.server import Faults, reference_output

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
MODEL = "llvm-model-1"


def write_input(path: Path, table: pa.Table) -> Path:
    suffix = path.suffix
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    return path


@pytest.mark.parametrize("in_ext", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize("out_ext", [".parquet", ".csv", ".jsonl"])
def test_each_format_in_and_out(tmp_path: Path, server, in_ext: str, out_ext: str) -> None:
    table = prompts_table(30)
    source = write_input(tmp_path / f"in{in_ext}", table)
    out = tmp_path / f"out{out_ext}"

    result = invoke_run(source, server.url, out=out)

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(30))
    assert [r["prompt"] for r in rows] == table.column("prompt").to_pylist()
    assert list(rows[0]) == ["id", "prompt", "topic", *RESULT_COLUMNS]
    assert all(r["llvm_status"] == "ok" for r in rows)
    assert [r["llvm_output"] for r in rows] == [
        reference_output(MODEL, p) for p in table.column("prompt").to_pylist()
    ]
    assert not (tmp_path / f"out{out_ext}.llvm-staging").exists()
    assert server.stats.inference_requests == 30


def test_result_columns_have_the_design_types(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    summary = run_batch(
        source, tmp_path / "out.parquet", model=MODEL, base_url=server.url, progress=False
    )
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert summary.exit_code == 0
    assert schema.field("llvm_output").type == pa.string()
    assert schema.field("llvm_http_status").type == pa.int16()
    assert schema.field("llvm_attempts").type == pa.int16()
    assert schema.field("llvm_retry_wait_s").type == pa.float32()
    assert schema.field("llvm_latency_ms").type == pa.float32()
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert rows[0]["llvm_http_status"] == 200 and rows[0]["llvm_attempts"] == 1
    assert json.loads(rows[0]["llvm_metadata"]) == {
        "input_tokens": 2,
        "output_tokens": 4,
        "finish_reason": "stop",
    }
    assert rows[0]["llvm_model"] == MODEL


def test_default_output_sits_beside_the_input(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "prompts.parquet", prompts_table(3))
    result = invoke_run(source, server.url)
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "prompts.llvm.parquet")) == 3


def test_template_mode_fills_columns(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    out = tmp_path / "out.parquet"
    result = invoke_run(source, server.url, "--template", "Topic {topic}: {prompt}", out=out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert rows[2]["llvm_output"] == reference_output(MODEL, "Topic t2: question 2")


def test_template_naming_an_unknown_column_exits_2_before_sending(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(4))
    result = invoke_run(source, server.url, "--template", "Hi {nope}")
    assert result.exit_code == 2
    assert "'nope'" in result.output and "template" in result.output
    assert server.stats.requests == 0


def test_chat_mode_with_a_messages_column(tmp_path: Path, server) -> None:
    source = tmp_path / "chat.jsonl"
    shutil.copy(SAMPLE / "chat.jsonl", source)
    out = tmp_path / "chat.out.jsonl"
    result = invoke_run(source, server.url, "--chat", out=out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    first = rows[0]["messages"]
    prompt = "\n".join(f"{m['role']}: {m['content']}" for m in first)
    assert rows[0]["llvm_output"] == reference_output(MODEL, prompt)
    assert [r["conversation_id"] for r in rows] == [f"c{i:03d}" for i in range(1, 7)]


def test_chat_mode_with_system_and_user_template(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    out = tmp_path / "out.parquet"
    result = invoke_run(
        source,
        server.url,
        "--chat",
        "--system",
        "Be brief.",
        "--template",
        "Answer: {prompt}",
        out=out,
    )
    assert result.exit_code == 0, result.output
    assert read_rows(out)[1]["llvm_output"] == reference_output(
        MODEL, "system: Be brief.\nuser: Answer: question 1"
    )


def test_null_and_empty_prompts_are_skipped_not_sent(tmp_path: Path, server) -> None:
    table = pa.table({"prompt": pa.array(["a", None, "", "   ", "b"], pa.string())})
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out.parquet"
    summary = run_batch(source, out, model=MODEL, base_url=server.url, progress=False)
    rows = read_rows(out)
    assert [r["llvm_status"] for r in rows] == ["ok", "skipped", "skipped", "skipped", "ok"]
    assert {r["llvm_error_type"] for r in rows[1:4]} == {"invalid_input"}
    assert rows[1]["llvm_error"] == "prompt is null" and rows[2]["llvm_attempts"] == 0
    assert server.stats.inference_requests == 2
    assert (summary.ok, summary.skipped, summary.error, summary.exit_code) == (2, 3, 0, 0)


def test_per_row_options_come_from_columns_and_flags(tmp_path: Path, server) -> None:
    table = pa.table(
        {"prompt": ["one two three four five"] * 3, "mt": pa.array([1, None, 3], pa.int64())}
    )
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out.parquet"
    result = invoke_run(
        source, server.url, "--max-tokens-column", "mt", "--max-tokens", "2", out=out
    )
    assert result.exit_code == 0, result.output
    outputs = [r["llvm_output"] for r in read_rows(out)]
    assert outputs == [reference_output(MODEL, "one two three four five", n) for n in (1, 2, 3)]


def test_dry_run_renders_prompts_counts_rows_sends_nothing(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(12))
    result = invoke_run(source, server.url, "--dry-run", "--template", "Q: {prompt}")
    assert result.exit_code == 0, result.output
    assert "Q: question 0" in result.output and "Q: question 4" in result.output
    assert "12 rows" in result.output
    assert server.stats.requests == 0
    assert not (tmp_path / "in.llvm.parquet").exists()


def test_missing_prompt_column_exits_2_naming_it(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", pa.table({"text": ["a"]}))
    result = invoke_run(source, server.url)
    assert result.exit_code == 2
    assert "no column 'prompt'" in result.output and "text" in result.output
    assert server.stats.requests == 0


def test_unreadable_input_exits_2(tmp_path: Path, server) -> None:
    result = invoke_run(str(tmp_path / "missing.parquet"), server.url)
    assert result.exit_code == 2
    assert "missing.parquet" in result.output
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    result = invoke_run(str(tmp_path / "bad.parquet"), server.url)
    assert result.exit_code == 2 and "can't read" in result.output
    assert server.stats.requests == 0


def test_unknown_model_exits_2_before_any_inference(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    result = invoke_run(source, server.url, model="no-such-model")
    assert result.exit_code == 2
    assert "no-such-model" in result.output and "not found" in result.output
    assert server.stats.inference_requests == 0


def test_summary_json_for_xcom(tmp_path: Path, server) -> None:
    table = pa.table({"prompt": ["a", "", "c"]})
    source = write_parquet(tmp_path / "in.parquet", table)
    summary_path = tmp_path / "summary.json"
    result = invoke_run(source, server.url, "--summary-json", str(summary_path))
    assert result.exit_code == 0, result.output
    summary = json.loads(summary_path.read_text())
    assert (summary["ok"], summary["skipped"], summary["error"], summary["rows"]) == (2, 1, 0, 3)
    assert summary["status"] == "complete" and summary["exit_code"] == 0


def test_rows_keep_input_order_across_many_chunks(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(1050, empty_every=9))
    out = tmp_path / "out.parquet"
    summary = run_batch(
        source, out, model=MODEL, base_url=server.url, chunk_size=100, concurrency=8, progress=False
    )
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(1050))
    assert summary.skipped == 1050 // 9 and summary.ok == 1050 - 1050 // 9
    # 11 checkpoint parts (and more, with flushes) make one row group, not one each: readers
    # stay fast and the writer's footer does not grow with the number of parts.
    assert pq.ParquetFile(out).metadata.num_row_groups == 1


def test_empty_input_gives_an_empty_output_with_result_columns(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(0))
    out = tmp_path / "out.parquet"
    summary = run_batch(source, out, model=MODEL, base_url=server.url, progress=False)
    table = pq.read_table(out)
    assert summary.exit_code == 0 and table.num_rows == 0
    assert table.column_names == ["id", "prompt", "topic", *RESULT_COLUMNS]


def test_a_finished_output_is_not_redone(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / "out.parquet"
    assert invoke_run(source, server.url, out=out).exit_code == 0
    sent = server.stats.inference_requests
    again = invoke_run(source, server.url, out=out)
    assert again.exit_code == 0 and "already_complete" in again.output
    assert server.stats.inference_requests == sent


def test_a_foreign_output_is_not_overwritten_without_overwrite(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    result = invoke_run(source, server.url, out=out)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_text() == "precious\n"
    result = invoke_run(source, server.url, "--overwrite", out=out)
    assert result.exit_code == 0 and len(read_rows(out)) == 5


def test_sample_data_runs_with_the_local_server(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = invoke(
        "run", str(SAMPLE / "prompts.parquet"), "--local-server", "-m", MODEL, "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    source = pq.read_table(SAMPLE / "prompts.parquet").to_pylist()
    assert len(rows) == len(source)
    assert {r["llvm_status"] for r in rows} == {"ok", "skipped"}


def test_without_a_terminal_progress_is_logged_as_lines(tmp_path: Path, make_server) -> None:
    server = make_server(faults=Faults(latency=0.01))
    source = write_parquet(tmp_path / "in.parquet", prompts_table(60))
    result = invoke_run(source, server.url, "--concurrency", "2", "--progress-interval", "0.05")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("llvm-batch: ")]
    assert len(lines) >= 2
    assert "/60 rows" in lines[-1] and "rows/s" in lines[-1] and "breaker closed" in lines[-1]
    quiet = invoke_run(source, server.url, "--overwrite", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_fsspec_urls_and_compressed_inputs(tmp_path: Path, server) -> None:
    import fsspec

    table = prompts_table(7)
    with fsspec.open("memory://bucket/in.parquet", "wb") as handle:
        pq.write_table(table, handle)
    out = tmp_path / "from_url.parquet"
    summary = run_batch("memory://bucket/in.parquet", out, model=MODEL, base_url=server.url)
    assert summary.exit_code == 0 and len(read_rows(out)) == 7

    gz = tmp_path / "in.csv.gz"
    with fsspec.open(str(gz), "wb", compression="gzip") as handle:
        pacsv.write_csv(table, handle)
    summary = run_batch(gz, tmp_path / "from_gz.jsonl", model=MODEL, base_url=server.url)
    rows = read_rows(tmp_path / "from_gz.jsonl")
    assert (
        summary.exit_code == 0 and [r["prompt"] for r in rows] == table.column("prompt").to_pylist()
    )
