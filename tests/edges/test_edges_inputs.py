"""Inputs whose types or fields change after the first block are found before anything is
sent: a CSV is pinned to text for the whole file, a JSONL file is refused (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

from batch_support import invoke, read_rows
from chaos_support import MODEL, posts, run_args

from llvm_batch.server import reference_output

ROWS = 5_000
PAD = "x" * 1000  # 5 MB in all: past the first 4 MiB block, where types are inferred


def drifting_csv(path: Path) -> Path:
    lines = ["id,prompt,score,pad"] + [f"{i},question {i},{i},{PAD}" for i in range(ROWS)]
    lines.append(f"A-{ROWS},question late,high,{PAD}")  # id and score turn to text on the last row
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_whose_types_change_late_is_read_as_text_throughout(tmp_path, scripted_thread):
    app = scripted_thread()
    source = drifting_csv(tmp_path / "in.csv")
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "-c", "8"))

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert len(rows) == ROWS + 1 and len(posts(app)) == ROWS + 1
    assert rows[0]["id"] == "0" and rows[-1]["id"] == f"A-{ROWS}"  # exactly as written
    assert rows[-1]["score"] == "high"
    assert rows[-1]["llvm_output"] == reference_output(MODEL, "question late")


def test_a_jsonl_whose_types_change_late_is_refused_before_sending(tmp_path, scripted_thread):
    app = scripted_thread()
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"prompt": f"q{i}", "n": i, "pad": PAD}) for i in range(ROWS)]
    lines.append(json.dumps({"prompt": "late", "n": "text", "pad": PAD}))
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 2, result.output
    assert "column types change part-way" in result.output and "Traceback" not in result.output
    assert posts(app) == [] and not out.exists()
