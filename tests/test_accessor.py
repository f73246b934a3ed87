"""``df.llvm`` and ``series.llvm`` through the real accessor against the reference server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from batch_support import RESULT_COLUMNS

import llvm_batch
from llvm_batch import AsyncLLVMClient, InputError, LLVMClient
from llvm_batch.server import Faults, reference_output

MODEL = "llvm-model-1"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"prompt": ["alpha", "beta", "", "delta"], "topic": ["a", "b", "c", "d"]},
        index=pd.Index([10, 7, 3, 42], name="row"),
    )


def test_infer_keeps_columns_and_index_and_adds_arrow_result_columns(server, frame) -> None:
    out = frame.llvm.infer(MODEL, base_url=server.url, progress=False)

    assert list(out.columns) == ["prompt", "topic", *RESULT_COLUMNS]
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out[["prompt", "topic"]], frame)
    assert all(isinstance(out[c].dtype, pd.ArrowDtype) for c in RESULT_COLUMNS)
    assert str(out["llvm_attempts"].dtype) == "int16[pyarrow]"
    assert out.loc[42, "llvm_output"] == reference_output(MODEL, "delta")
    assert out.loc[3, "llvm_status"] == "skipped"
    assert server.stats.inference_requests == 3


def test_infer_with_a_template_and_options(server, frame) -> None:
    out = frame.llvm.infer(MODEL, template="{topic}={prompt}", max_tokens=2, base_url=server.url)
    assert out.loc[7, "llvm_output"] == reference_output(MODEL, "b=beta", 2)


def test_chat_with_messages_column_and_with_system_plus_user(server, frame) -> None:
    chats = pd.read_json(SAMPLE / "chat.jsonl", lines=True)
    out = chats.llvm.chat(MODEL, base_url=server.url, progress=False)
    first = chats.loc[0, "messages"]
    expected = "\n".join(f"{m['role']}: {m['content']}" for m in first)
    assert out.loc[0, "llvm_output"] == reference_output(MODEL, expected)

    out = frame.llvm.chat(MODEL, system="Be short.", user="Say {prompt}", base_url=server.url)
    assert out.loc[10, "llvm_output"] == reference_output(
        MODEL, "system: Be short.\nuser: Say alpha"
    )


def test_async_methods_and_a_running_event_loop(server, frame) -> None:
    async def notebook_cell() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        sync_inside_loop = frame.llvm.infer(MODEL, base_url=server.url, progress=False)
        awaited = await frame.llvm.ainfer(MODEL, base_url=server.url, progress=False)
        chatted = await frame.llvm.achat(MODEL, user="{prompt}", base_url=server.url)
        return sync_inside_loop, awaited, chatted

    sync_inside_loop, awaited, chatted = asyncio.run(notebook_cell())
    assert sync_inside_loop["llvm_output"].equals(awaited["llvm_output"])
    assert chatted.loc[10, "llvm_output"] == reference_output(MODEL, "user: alpha")


def test_reusing_a_client(server, frame) -> None:
    with LLVMClient(base_url=server.url, default_model="llvm-model-2") as client:
        out = frame.llvm.infer(client=client, progress=False)
        assert out.loc[10, "llvm_output"] == reference_output("llvm-model-2", "alpha")
        assert client.request_count == 3

    async def with_async_client() -> pd.DataFrame:
        async with AsyncLLVMClient(base_url=server.url) as client:
            with pytest.raises(TypeError, match="ainfer"):
                frame.llvm.infer(MODEL, client=client)
            return await frame.llvm.ainfer(MODEL, client=client, progress=False)

    assert asyncio.run(with_async_client()).loc[10, "llvm_output"] == reference_output(
        MODEL, "alpha"
    )


def test_failed_rows_never_raise_and_say_why(make_server, frame) -> None:
    server = make_server(faults=Faults(error_rate=1.0))
    out = frame.llvm.infer(
        MODEL, base_url=server.url, max_retries=1, retry_delay=0.001, breaker=False
    )
    failed = out[out["llvm_status"] == "error"]
    assert len(failed) == 3
    assert set(failed["llvm_error_type"]) == {"server_error"}
    assert (failed["llvm_attempts"] == 2).all()
    assert "503" in failed.iloc[0]["llvm_error"]


def test_retry_errors_reruns_only_failed_rows(make_server, frame) -> None:
    server = make_server(faults=Faults(error_rate=0.5, seed=11))
    first = frame.llvm.infer(MODEL, base_url=server.url, max_retries=0, breaker=False)
    failed = int((first["llvm_status"] == "error").sum())
    assert failed >= 1
    server.set_faults(error_rate=0.0)
    server.server.reset_stats()
    fixed = first.llvm.retry_errors(MODEL, base_url=server.url)
    assert server.stats.inference_requests == failed
    assert set(fixed["llvm_status"]) == {"ok", "skipped"}
    assert fixed.index.equals(frame.index)
    kept = first["llvm_status"] == "ok"
    pd.testing.assert_frame_equal(fixed[kept], first[kept])


def test_cache_skips_prompts_that_already_succeeded(server, frame, tmp_path: Path) -> None:
    first = frame.llvm.infer(MODEL, base_url=server.url, cache=tmp_path / "cache")
    sent = server.stats.inference_requests
    again = frame.llvm.infer(MODEL, base_url=server.url, cache=tmp_path / "cache")
    assert server.stats.inference_requests == sent  # nothing re-sent, even with a new cache object
    assert again["llvm_output"].equals(first["llvm_output"])
    assert json.loads(again.loc[10, "llvm_metadata"])["cached"] is True
    other_options = frame.llvm.infer(
        MODEL, base_url=server.url, max_tokens=1, cache=tmp_path / "cache"
    )
    assert server.stats.inference_requests == sent + 3
    assert other_options.loc[10, "llvm_output"] == reference_output(MODEL, "alpha", 1)


def test_empty_frame_gives_empty_result_columns(server) -> None:
    out = pd.DataFrame({"prompt": pd.Series([], dtype=str)}).llvm.infer(MODEL, base_url=server.url)
    assert out.empty and list(out.columns) == ["prompt", *RESULT_COLUMNS]
    assert str(out["llvm_status"].dtype) == "string[pyarrow]"


def test_clear_errors_before_anything_is_sent(server, frame, monkeypatch) -> None:
    with pytest.raises(InputError, match="no column 'text'"):
        frame.llvm.infer(MODEL, prompt="text", base_url=server.url)
    with pytest.raises(InputError, match="'missing'"):
        frame.llvm.infer(MODEL, template="{missing}", base_url=server.url)
    monkeypatch.delenv("LLVM_DEFAULT_MODEL", raising=False)
    with pytest.raises(ValueError, match="no model"):
        frame.llvm.infer(base_url=server.url)
    assert server.stats.requests == 0


def test_series_accessor(server) -> None:
    prompts = pd.Series(["x", "y"], name="question", index=["a", "b"])
    out = prompts.llvm.infer(MODEL, base_url=server.url)
    assert list(out.columns[:1]) == ["question"]
    assert out.loc["b", "llvm_output"] == reference_output(MODEL, "y")


def test_import_registers_the_accessor() -> None:
    assert hasattr(pd.DataFrame, "llvm") and hasattr(pd.Series, "llvm")
    assert llvm_batch.LLVMClient is LLVMClient


def test_retry_errors_of_a_chat_result_with_duplicate_index_labels(make_server) -> None:
    server = make_server(faults=Faults(error_rate=0.5, seed=5))
    frame = pd.DataFrame({"q": [f"q{i}" for i in range(12)]}, index=[0, 1] * 6)
    first = frame.llvm.chat(MODEL, user="{q}", base_url=server.url, max_retries=0, breaker=False)
    assert (first["llvm_status"] == "error").any()
    server.set_faults(error_rate=0.0)
    fixed = first.llvm.retry_errors(MODEL, chat=True, user="{q}", base_url=server.url)
    assert list(fixed["llvm_status"]) == ["ok"] * 12
    assert list(fixed["llvm_output"]) == [reference_output(MODEL, f"user: q{i}") for i in range(12)]
    assert list(fixed.index) == [0, 1] * 6


def test_series_with_a_non_string_name(server) -> None:
    out = pd.Series(["x"], name=0).llvm.infer(MODEL, base_url=server.url)
    assert out.columns[0] == 0
    assert out["llvm_output"].iloc[0] == reference_output(MODEL, "x")


def test_model_and_key_come_from_arguments_then_metadata_then_the_environment(
    make_server, frame, monkeypatch
) -> None:
    server = make_server(api_key="env-key")
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    monkeypatch.setenv("LLVM_DEFAULT_MODEL", "llvm-model-2")
    from_env = frame.llvm.infer(base_url=server.url)
    assert from_env.loc[10, "llvm_output"] == reference_output("llvm-model-2", "alpha")

    monkeypatch.delenv("LLVM_API_KEY")
    meta = {"llvm_default_model": MODEL, "llvm_api_key": "env-key"}
    from_metadata = frame.llvm.infer(base_url=server.url, metadata=meta)
    assert set(from_metadata["llvm_model"].dropna()) == {MODEL}
    assert set(from_metadata["llvm_status"]) == {"ok", "skipped"}

    given = frame.llvm.chat("llvm-model-2", user="{prompt}", base_url=server.url, metadata=meta)
    assert given.loc[10, "llvm_output"] == reference_output("llvm-model-2", "user: alpha")


def test_the_missing_model_message_names_every_way_to_give_one(server, frame, monkeypatch):
    monkeypatch.delenv("LLVM_DEFAULT_MODEL", raising=False)
    with pytest.raises(ValueError) as info:
        frame.llvm.infer(base_url=server.url)
    assert str(info.value) == (
        "no model given: pass model=, a client with a default model, or set LLVM_DEFAULT_MODEL"
    )
    with LLVMClient(base_url=server.url) as client, pytest.raises(ValueError, match="no model"):
        frame.llvm.infer(client=client)
    assert server.stats.requests == 0


def test_priority_and_options_are_checked_before_anything_is_sent(server, frame) -> None:
    with pytest.raises(ValueError, match="priority must be one of high, normal, low"):
        frame.llvm.infer(MODEL, base_url=server.url, priority="urgent")
    with pytest.raises(TypeError, match="unknown client option.*max_retrys"):
        frame.llvm.infer(MODEL, base_url=server.url, max_retrys=1)  # type: ignore[call-arg]
    with LLVMClient(base_url=server.url) as client, pytest.raises(TypeError, match="not both"):
        frame.llvm.infer(MODEL, client=client, max_retries=1)
    assert server.stats.requests == 0
    out = frame.llvm.infer(MODEL, base_url=server.url, priority="high", progress=False)
    assert set(out["llvm_status"]) == {"ok", "skipped"}


def test_retry_errors_refuses_the_other_methods_prompt_keywords(server, frame) -> None:
    done = frame.llvm.infer(MODEL, base_url=server.url)
    with pytest.raises(TypeError, match=r"chat=True\) takes the keywords of chat, not template="):
        done.llvm.retry_errors(MODEL, chat=True, template="{prompt}")
    with pytest.raises(TypeError, match=r"takes the keywords of infer, not user=, system="):
        done.llvm.retry_errors(MODEL, user="{prompt}", system="Be short.")
    pd.testing.assert_frame_equal(done.llvm.retry_errors(MODEL, base_url=server.url), done)
