"""Property tests: whatever table goes in, the same columns, values and order come out, plus the
result columns, and each row's result follows from its prompt alone.

Parquet keeps every Arrow type, so it is checked for all of them; CSV and JSONL are checked for
the types they can represent (CSV: scalars, nested values as JSON text; JSONL: JSON values).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from batch_support import RESULT_COLUMNS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llvm_batch.batch import run_batch
from llvm_batch.server import ServerThread, reference_output

MODEL = "llvm-model-1"
RESERVED = {"prompt", "__llvm_row", *RESULT_COLUMNS}

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def server():
    with ServerThread(host="127.0.0.1", port=0) as running:
        yield running


# -- strategies ----------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


floats64 = st.floats(allow_nan=True, allow_infinity=True)
struct_type = pa.struct([("a", pa.int64()), ("b", pa.string())])
struct_values = st.fixed_dictionaries({"a": nullable(ints(64, True)), "b": nullable(text)})
epoch = st.integers(-(2**40), 2**40)

#: name -> (Arrow type, strategy for one non-null value)
ALL_TYPES: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    **{
        f"{'' if signed else 'u'}int{bits}": (
            getattr(pa, f"{'' if signed else 'u'}int{bits}")(),
            ints(bits, signed),
        )
        for bits in (8, 16, 32, 64)
        for signed in (True, False)
    },
    "float16": (pa.float16(), st.floats(width=16)),
    "float32": (pa.float32(), st.floats(width=32)),
    "float64": (pa.float64(), floats64),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), text),
    "large_string": (pa.large_string(), text),
    "binary": (pa.binary(), st.binary(max_size=16)),
    "date32": (pa.date32(), st.dates()),
    "date64": (pa.date64(), st.dates()),
    "timestamp_s": (pa.timestamp("s"), epoch),
    "timestamp_ms_utc": (pa.timestamp("ms", tz="UTC"), epoch),
    "timestamp_us_paris": (pa.timestamp("us", tz="Europe/Paris"), epoch),
    "timestamp_ns_offset": (pa.timestamp("ns", tz="+05:30"), epoch),
    "time64": (pa.time64("us"), st.times()),
    "duration": (pa.duration("ms"), st.integers(-(2**40), 2**40)),
    "decimal": (
        pa.decimal128(12, 3),
        st.decimals(-(10**8), 10**8, places=3, allow_nan=False, allow_infinity=False),
    ),
    "list": (pa.list_(pa.int32()), st.lists(nullable(ints(32, True)), max_size=4)),
    "struct": (struct_type, struct_values),
    "map": (
        pa.map_(pa.string(), pa.int64()),
        st.lists(st.tuples(text, ints(64, True)), max_size=3),
    ),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["x", "y", "é", ""])),
}

#: What CSV and JSONL can carry and give back.
CSV_TYPES = ["int8", "int64", "uint32", "float64", "bool", "string", "list", "struct"]
JSONL_TYPES = [*CSV_TYPES, "dictionary", "large_string"]

prompts = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from([" ", "\t\n", "\u3000"]),
    text.filter(lambda s: bool(s.strip())),
    st.builds(lambda word, n: (word + " ") * n, text.filter(str.strip), st.integers(500, 4000)),
)


def column(kind: str, rows: int) -> st.SearchStrategy[pa.Array]:
    arrow_type, values = ALL_TYPES[kind]
    drawn = st.lists(nullable(values), min_size=rows, max_size=rows)
    if kind == "dictionary":
        return drawn.map(lambda v: pa.array(v, pa.string()).dictionary_encode())
    return drawn.map(lambda v: pa.array(v, arrow_type))


@st.composite
def tables(draw: st.DrawFn, types: list[str]) -> pa.Table:
    rows = draw(st.integers(0, 12))
    names = draw(
        st.lists(text.filter(lambda n: n not in RESERVED), min_size=1, max_size=5, unique=True)
    )
    arrays = [draw(column(draw(st.sampled_from(types)), rows)) for _ in names]
    where = draw(st.integers(0, len(names)))
    names.insert(where, "prompt")
    arrays.insert(
        where, pa.array(draw(st.lists(prompts, min_size=rows, max_size=rows)), pa.string())
    )
    return pa.table(arrays, names=names)


# -- comparing -----------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_results_follow_from_prompts(prompt_values: list[Any], rows: list[dict]) -> None:
    assert len(rows) == len(prompt_values)
    for prompt, row in zip(prompt_values, rows, strict=True):
        if prompt is None or not prompt.strip():
            assert (row["llvm_status"], row["llvm_attempts"]) == ("skipped", 0), row
            assert row["llvm_error_type"] == "invalid_input" and row["llvm_output"] is None
        else:
            assert row["llvm_status"] == "ok", row
            assert row["llvm_output"] == reference_output(MODEL, prompt)
            assert (row["llvm_attempts"], row["llvm_http_status"]) == (1, 200)


def run(server, table: pa.Table, out_name: str, chunk_size: int) -> tuple[pa.Table, Path, Any]:
    where = Path(tempfile.mkdtemp(prefix="llvm-prop-"))
    source = where / "in.parquet"
    pq.write_table(table, source)
    out = where / out_name
    summary = run_batch(
        source,
        out,
        model=MODEL,
        base_url=server.url,
        chunk_size=chunk_size,
        concurrency=4,
        progress=False,
        flush_interval=0.05,
    )
    assert summary.exit_code == 0, summary.lines()
    assert not (where / (out_name + ".llvm-staging")).exists()
    return pq.read_table(source), out, where


def cleanup(where: Path) -> None:
    shutil.rmtree(where)


# -- properties ----------------------------------------------------------------------------


@SETTINGS
@given(table=tables(list(ALL_TYPES)), chunk_size=st.integers(1, 5))
def test_parquet_keeps_every_column_value_type_and_row_order(server, table, chunk_size) -> None:
    expected, out, where = run(server, table, "out.parquet", chunk_size)
    try:
        result = pq.read_table(out)
        inputs = expected.num_columns
        assert result.column_names == expected.column_names + RESULT_COLUMNS
        for i in range(inputs):
            assert result.schema.field(i) == expected.schema.field(i)
            if result.column(i).equals(expected.column(i)):
                continue  # compared in Arrow: also covers dates Python's datetime can't hold
            # Arrow calls NaN unequal to itself: compare the values, NaN-aware.
            got, want = result.column(i).to_pylist(), expected.column(i).to_pylist()
            assert same(got, want), (expected.column_names[i], got, want)
        prompts_in = expected.column("prompt").to_pylist()
        assert_results_follow_from_prompts(prompts_in, result.select(RESULT_COLUMNS).to_pylist())
    finally:
        cleanup(where)


def read_csv_back(path: Path, schema: pa.Schema) -> pa.Table:
    types = {
        f.name: pa.string() if pa.types.is_nested(f.type) else f.type
        for f in schema
        if not f.name.startswith("llvm_")
    }
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


@SETTINGS
@given(table=tables(CSV_TYPES), chunk_size=st.integers(1, 5))
def test_csv_keeps_scalars_and_writes_nested_values_as_json(server, table, chunk_size) -> None:
    expected, out, where = run(server, table, "out.csv", chunk_size)
    try:
        result = read_csv_back(out, expected.schema)
        assert result.column_names == expected.column_names + RESULT_COLUMNS
        for i, field in enumerate(expected.schema):
            got, want = result.column(i).to_pylist(), expected.column(i).to_pylist()
            if pa.types.is_nested(field.type):
                got = [None if v is None else json.loads(v) for v in got]
            assert same(got, want), (field.name, got, want)
        assert_results_follow_from_prompts(
            expected.column("prompt").to_pylist(), result.select(RESULT_COLUMNS).to_pylist()
        )
    finally:
        cleanup(where)


@SETTINGS
@given(table=tables(JSONL_TYPES), chunk_size=st.integers(1, 5))
def test_jsonl_keeps_json_values_names_and_order(server, table, chunk_size) -> None:
    expected, out, where = run(server, table, "out.jsonl", chunk_size)
    try:
        # JSON Lines ends lines with \n only (a value may hold U+2028, which splitlines() cuts at)
        lines = out.read_text(encoding="utf-8").split("\n")[:-1]
        rows = [json.loads(line) for line in lines]
        assert len(rows) == expected.num_rows
        for row, want in zip(rows, expected.to_pylist(), strict=True):
            assert list(row) == expected.column_names + RESULT_COLUMNS
            assert same({k: row[k] for k in want}, want), (row, want)
        assert_results_follow_from_prompts(
            expected.column("prompt").to_pylist(),
            [{k: r[k] for k in RESULT_COLUMNS} for r in rows],
        )
    finally:
        cleanup(where)
