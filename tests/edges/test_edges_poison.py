"""Answers holding values that can't be stored (lone surrogates, ...) fail their row, never the
chunk or the run; a background task that dies stops the run at once with its cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from batch_support import invoke, read_rows, staging_of, write_parquet
from chaos_support import MODEL, by_prompt, posts, run_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llvm_batch.batch import columns as cols
from llvm_batch.client import Outcome
from llvm_batch.protocol import get_protocol
from llvm_batch.server import reference_output

LONE = "\ud83d"  # the first half of an emoji, cut mid-character


def raw_json(text: str, status: int = 200) -> web.Response:
    """A JSON body written by hand, so that escapes like ``\\ud83d`` go out as they are."""
    return web.Response(text=text, status=status, content_type="application/json")


POISONS = {
    "output": '{"model_id": "m1", "outputs": "cut \\ud83d", "metadata": {}}',
    "nested output": '{"model_id": "m1", "outputs": {"text": "\\udc00"}, "metadata": {}}',
    "metadata value": '{"model_id": "m1", "outputs": "fine", "metadata": {"t": "\\ud83d"}}',
    "metadata key": '{"model_id": "m1", "outputs": "fine", "metadata": {"\\ud83d": 1}}',
    "extra field": '{"model_id": "m1", "outputs": "fine", "note": "\\udfff"}',
    "model id": '{"model_id": "m1\\ud83d", "outputs": "fine", "metadata": {}}',
}


def prompts(*names: str) -> pa.Table:
    return pa.table({"id": list(range(len(names))), "prompt": list(names)})


@pytest.mark.parametrize("where", sorted(POISONS))
def test_an_unstorable_answer_fails_its_row_only(tmp_path: Path, scripted_thread, where) -> None:
    def handler(seen, request):
        if seen.inputs == "poison":
            return raw_json(POISONS[where])
        return None

    app = scripted_thread(handler)
    names = [f"fine {i}" for i in range(5)] + ["poison"] + [f"more {i}" for i in range(5)]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--chunk-size", "4"))

    assert result.exit_code == 1, result.output  # one error row, --max-error-rate 0
    rows = by_prompt(read_rows(out))
    assert len(rows) == len(names)
    bad = rows["poison"]
    assert bad["llvm_status"] == "error" and bad["llvm_error_type"] == "invalid_response"
    assert "surrogate" in bad["llvm_error"] and bad["llvm_output"] is None
    assert bad["llvm_http_status"] == 200 and bad["llvm_attempts"] == 1
    for name in names:
        if name != "poison":
            assert rows[name]["llvm_output"] == reference_output(MODEL, name)
    assert len(posts(app)) == len(names)
    assert not staging_of(out).exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"error": "bad \\ud83d input"}',
        '{"error": {"message": "\\udc00"}}',
        '{"detail": "\\ud800\\ud800"}',
    ],
)
def test_an_error_body_with_a_lone_surrogate_is_stored(
    tmp_path: Path, scripted_thread, body
) -> None:
    def handler(seen, request):
        if seen.inputs == "poison":
            return raw_json(body, status=400)
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts("a", "poison", "b"))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url))

    assert result.exit_code == 1, result.output
    rows = by_prompt(read_rows(out))
    bad = rows["poison"]
    assert bad["llvm_status"] == "error" and bad["llvm_error_type"] == "client_error"
    assert bad["llvm_http_status"] == 400
    bad["llvm_error"].encode("utf-8")  # stored text is valid UTF-8
    assert rows["a"]["llvm_status"] == rows["b"]["llvm_status"] == "ok"


def _outcome(answer: dict) -> Outcome:
    outcome = Outcome()
    outcome.value, outcome.http_status, outcome.attempts = answer, 200, 1
    return outcome


answer_text = st.text(st.characters(codec=None), max_size=20)
answer_value = st.recursive(
    st.none() | st.booleans() | st.integers() | answer_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(answer_text, inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    outputs=answer_value,
    metadata=st.dictionaries(answer_text, answer_value, max_size=3),
    model_id=answer_text,
)
def test_any_unicode_in_any_answer_field_round_trips_or_fails_its_row(
    outputs, metadata, model_id
) -> None:
    answer = {"model_id": model_id, "outputs": outputs, "metadata": metadata}
    row = cols.from_outcome(_outcome(answer), "m1", get_protocol("llvm"))

    table = pa.table(dict(zip(cols.result_names(), cols.result_arrays([row]), strict=True)))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    back = pq.read_table(pa.BufferReader(sink.getvalue())).to_pylist()[0]

    if row.status == cols.STATUS_OK:
        if isinstance(outputs, str):
            assert back["llvm_output"] == outputs
        elif outputs is not None:
            assert json.loads(back["llvm_output"]) == outputs
        assert back["llvm_model"] == (model_id or "m1")
    else:
        assert row.error_type == "invalid_response" and "surrogate" in (row.error or "")
        assert back["llvm_output"] is None


# -- a background task that dies --------------------------------------------------------


def test_a_dying_checkpoint_writer_stops_the_run_at_once(
    tmp_path: Path, scripted_thread, monkeypatch
) -> None:
    from llvm_batch.batch.checkpoint import Checkpoint

    commit = Checkpoint.commit
    calls = []

    def failing_commit(self, chunk, table):
        calls.append(chunk)
        if len(calls) == 2:
            raise RuntimeError("the part writer broke")
        commit(self, chunk, table)

    monkeypatch.setattr(Checkpoint, "commit", failing_commit)
    app = scripted_thread()
    names = [f"q{i}" for i in range(3000)]
    source = write_parquet(tmp_path / "in.parquet", prompts(*names))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--chunk-size", "10", "-c", "2"))

    assert result.exit_code == 3, result.output
    assert "the checkpoint writer failed (RuntimeError: the part writer broke)" in result.output
    assert "Traceback" not in result.output
    assert len(posts(app)) < 1000  # stopped at once, not after sending every row
    assert not out.exists() and staging_of(out).exists()
    monkeypatch.setattr(Checkpoint, "commit", commit)
    again = invoke(*run_args(source, out, app.url, "--chunk-size", "10"))
    assert again.exit_code == 0, again.output
    assert [row["prompt"] for row in read_rows(out)] == names


def test_a_dying_row_worker_stops_the_run_at_once(
    tmp_path: Path, scripted_thread, monkeypatch
) -> None:
    from_outcome = cols.from_outcome

    def failing(outcome, model, *args, **kw):
        if outcome.value and outcome.value.get("outputs") == reference_output(MODEL, "q5"):
            raise KeyError("a bug")
        return from_outcome(outcome, model, *args, **kw)

    monkeypatch.setattr(cols, "from_outcome", failing)
    app = scripted_thread()
    source = write_parquet(tmp_path / "in.parquet", prompts(*[f"q{i}" for i in range(3000)]))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "-c", "1"))

    assert result.exit_code == 3, result.output
    assert "a row worker failed (KeyError: 'a bug')" in result.output
    assert len(posts(app)) < 1000


def test_df_llvm_fails_only_the_poisoned_row(scripted_thread) -> None:
    import pandas as pd

    import llvm_batch.accessor  # noqa: F401 - registers df.llvm

    app = scripted_thread(
        lambda seen, request: raw_json(POISONS["output"]) if seen.inputs == "poison" else None
    )
    frame = pd.DataFrame({"prompt": ["a", "poison", "b"]})

    out = frame.llvm.infer(MODEL, base_url=app.url, progress=False)

    assert list(out["llvm_status"]) == ["ok", "error", "ok"]
    assert "surrogate" in out["llvm_error"][1]
    pq.write_table(pa.Table.from_pandas(out), pa.BufferOutputStream())  # storable as it is
