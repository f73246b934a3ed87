"""``llvm-batch run --config job.toml``: options from a file, flags over it, no unknown keys."""

from __future__ import annotations

from pathlib import Path

from batch_support import invoke, prompts_table, read_rows, write_parquet

from llvm_batch.server import reference_output


def write_job(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_job_file_holds_the_whole_command(tmp_path: Path, server) -> None:
    write_parquet(tmp_path / "in.parquet", prompts_table(6))
    job = write_job(
        tmp_path / "job.toml",
        f'input = "in.parquet"\noutput = "out.csv"\nmodel = "llvm-model-2"\n'
        f'base-url = "{server.url}"\nmax_tokens = 2\nsummary-json = "summary.json"\n',
    )
    result = invoke("run", "--config", str(job))
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "out.csv")
    assert rows[1]["llvm_output"] == reference_output("llvm-model-2", "question 1", 2)
    assert (tmp_path / "summary.json").exists()


def test_flags_override_the_job_file(tmp_path: Path, server) -> None:
    write_parquet(tmp_path / "in.parquet", prompts_table(3))
    job = write_job(
        tmp_path / "job.toml",
        f'input = "in.parquet"\nmodel = "llvm-model-2"\nbase_url = "{server.url}"\n',
    )
    out = tmp_path / "flag.parquet"
    result = invoke("run", "--config", str(job), "-m", "llvm-model-1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert read_rows(out)[0]["llvm_model"] == "llvm-model-1"


def test_unknown_keys_and_bad_toml_are_usage_errors(tmp_path: Path, server) -> None:
    job = write_job(tmp_path / "job.toml", 'input = "x.parquet"\nmax_retrys = 3\n')
    result = invoke("run", "--config", str(job))
    assert result.exit_code == 2
    assert "unknown key 'max_retrys'" in result.output and "max-retries" in result.output
    bad = write_job(tmp_path / "bad.toml", "model = \n")
    result = invoke("run", "--config", str(bad))
    assert result.exit_code == 2 and "not valid TOML" in result.output
    result = invoke("run", "--config", str(tmp_path / "missing.toml"))
    assert result.exit_code == 2 and "can't read" in result.output
    assert server.stats.requests == 0


def test_input_is_required_somewhere(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.toml", 'model = "m"\n')
    result = invoke("run", "--config", str(job))
    assert result.exit_code == 2 and "INPUT" in result.output
