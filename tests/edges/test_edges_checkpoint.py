"""A damaged or deleted checkpoint part: the resume runs its rows again (one note line), never
a traceback, never an output with holes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_support import (
    invoke,
    manifest_parts,
    prompts_table,
    read_rows,
    staging_of,
    write_parquet,
)
from chaos_support import MODEL, posts, run_args, status

from llvm_batch.server import reference_output


def stopped_run(tmp_path: Path, scripted_thread) -> tuple[Path, Path, object]:
    """A run stopped (exit 3: the key was refused) after some chunks were committed."""
    state = {"refuse": True}

    def handler(seen, request):
        if seen.method == "POST" and state["refuse"] and int(seen.inputs.split()[1]) >= 40:
            return status(401, "key revoked")
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(60))
    out = tmp_path / "out.parquet"
    first = invoke(*run_args(source, out, app.url, "--chunk-size", "10", "-c", "1"))
    assert first.exit_code == 3, first.output
    assert len(manifest_parts(staging_of(out))) >= 3
    state["refuse"] = False
    return source, out, app


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "emptied"])
def test_a_damaged_part_is_run_again_on_resume(tmp_path: Path, scripted_thread, damage) -> None:
    source, out, app = stopped_run(tmp_path, scripted_thread)
    part = staging_of(out) / manifest_parts(staging_of(out))[1]["file"]
    if damage == "deleted":
        part.unlink()
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[:-20])
    elif damage == "garbage":
        part.write_bytes(b"not parquet at all" * 10)
    else:
        part.write_bytes(b"")
    sent = len(posts(app))

    again = invoke(*run_args(source, out, app.url, "--chunk-size", "10"))

    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    assert f"note: checkpoint part {part.name} was damaged or missing" in again.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(60))
    assert all(r["llvm_output"] == reference_output(MODEL, r["prompt"]) for r in rows)
    assert len(posts(app)) - sent == 20 + 10  # the 20 never done, and the damaged part's 10
