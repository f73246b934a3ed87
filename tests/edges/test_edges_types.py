"""Every Arrow type in a prompt column is sent as the text a person would expect, or refused
before anything is sent; never as ``b'...'`` or a Python repr.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pytest
from batch_support import invoke, read_rows, write_parquet
from chaos_support import MODEL, posts, run_args

from llvm_batch.batch.prompts import PromptSpec, Request
from llvm_batch.errors import InputError

#: (Arrow array of one value, the prompt text expected, or None when refused up front)
PROMPT_TYPES = [
    (pa.array(["héllo"], pa.string()), "héllo"),
    (pa.array(["héllo"], pa.large_string()), "héllo"),
    (pa.array(["héllo"], pa.string_view()), "héllo"),
    (pa.array(["héllo".encode()], pa.binary()), "héllo"),
    (pa.array(["héllo".encode()], pa.large_binary()), "héllo"),
    (pa.array([b"hi!"], pa.binary(3)), "hi!"),
    (pa.array(["héllo"]).dictionary_encode(), "héllo"),
    (pa.array([b"cat"]).dictionary_encode(), "cat"),
    (pa.array([7], pa.int8()), "7"),
    (pa.array([2**40], pa.uint64()), str(2**40)),
    (pa.array([1.5], pa.float32()), "1.5"),
    (pa.array([True]), "True"),
    (pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)), "1.25"),
    (pa.array([dt.date(2024, 5, 1)]), "2024-05-01"),
    (pa.array([dt.datetime(2024, 5, 1, 12, 30)], pa.timestamp("s")), "2024-05-01 12:30:00"),
    (pa.array([pa.scalar((1, 2, 3), pa.month_day_nano_interval()).as_py()]), None),
    (pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string())), None),
    (pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array(["x"])]), None),
]


@pytest.mark.parametrize(
    ("column", "expected"), PROMPT_TYPES, ids=[str(column.type) for column, _ in PROMPT_TYPES]
)
def test_any_arrow_type_in_the_prompt_column_is_sent_as_text_or_refused(column, expected) -> None:
    for spec in (PromptSpec(), PromptSpec(template="Q: {prompt}")):
        batch = pa.record_batch({"prompt": column})
        if expected is None:
            with pytest.raises(InputError, match="no plain-text form"):
                spec.check(batch.schema)
            continue
        spec.check(batch.schema)
        (request,) = spec.render(batch)
        assert isinstance(request, Request)
        want = expected if spec.template is None else f"Q: {expected}"
        assert request.inputs == want


def test_a_binary_prompt_column_goes_out_as_its_text(tmp_path: Path, scripted_thread) -> None:
    app = scripted_thread()
    prompts = pa.array([b"caf\xc3\xa9", b"\xff\xfe not text", b"plain"], pa.binary())
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": prompts}))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 0, result.output
    assert sorted(app.inputs) == ["café", "plain"]
    rows = read_rows(out)
    assert rows[1]["llvm_status"] == "skipped"
    assert rows[1]["llvm_error"] == "prompt is binary data that is not UTF-8 text"
    assert [r["prompt"] for r in rows] == prompts.to_pylist()


def test_a_prompt_column_with_no_text_form_is_refused_before_sending(
    tmp_path: Path, scripted_thread
) -> None:
    app = scripted_thread()
    pairs = pa.array([[("k", "v")]] * 3, pa.map_(pa.string(), pa.string()))
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": pairs}))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 2 and "no plain-text form" in result.output
    assert posts(app) == [] and MODEL  # nothing sent
