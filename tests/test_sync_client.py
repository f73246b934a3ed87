"""LLVMClient: the same answers as the async engine, in and out of a running loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llvm_batch import (
    AsyncLLVMClient,
    LLVMClient,
    ModelNotFoundError,
    Priority,
    ServerError,
)
from llvm_batch.config import resolve_config
from llvm_batch.loops import ENV_EVENT_LOOP
from llvm_batch.server import Faults, reference_output

MODEL = "llvm-model-1"
MESSAGES = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


def calls(client):
    """The same calls, on either client; for the async one each value is a coroutine."""
    return {
        "models": client.list_models(),
        "info": client.get_model_info(MODEL),
        "plain": client.run_inference(MODEL, "Hello world", max_tokens=3),
        "object": client.run_inference(None, {"a": [1, 2]}, temperature=0.5),
        "chat": client.chat(MODEL, MESSAGES, priority=Priority.HIGH),
        "ping": client.test_endpoint(),
    }


def without_id_and_created(results: dict) -> dict:
    chat = {k: v for k, v in results["chat"].items() if k not in ("id", "created")}
    return {**results, "chat": chat}


def test_sync_and_async_clients_give_equal_results(server) -> None:
    with LLVMClient(server.url, default_model=MODEL) as client:
        sync_results = calls(client)

    async def main():
        async with AsyncLLVMClient(server.url, default_model=MODEL) as client:
            pending = calls(client)
            return {name: await coro for name, coro in pending.items()}

    async_results = asyncio.run(main())

    assert without_id_and_created(sync_results) == without_id_and_created(async_results)
    assert sync_results["models"] == {"models": ["llvm-model-1", "llvm-model-2"]}
    assert sync_results["plain"]["outputs"] == reference_output(MODEL, "Hello world", 3)
    assert sync_results["chat"]["content"] == reference_output(MODEL, "system: Be kind.\nuser: Hi")
    assert sync_results["chat"]["id"].startswith("llvm-")
    assert sync_results["ping"] is True
    assert server.stats.inference_requests == 6


def test_sync_client_raises_the_same_errors(make_server) -> None:
    server = make_server(faults=Faults(error_rate=1.0))
    with LLVMClient(server.url, max_retries=1, retry_delay=0) as client:
        with pytest.raises(ModelNotFoundError):
            client.get_model_info("no-such-model")
        with pytest.raises(ServerError) as info:
            client.run_inference(MODEL, "x")
        assert info.value.attempts == 2
        assert client.request_count == 3
        assert client.stats().retries == 1


def test_sync_client_works_inside_a_running_event_loop(server) -> None:
    async def notebook_cell():
        with LLVMClient(server.url, default_model=MODEL) as client:
            return client.model_ids(), client.run_inference(None, "from a cell")["outputs"]

    models, output = asyncio.run(notebook_cell())
    assert models == ["llvm-model-1", "llvm-model-2"]
    assert output == reference_output(MODEL, "from a cell")


def test_sync_client_keeps_one_session_across_calls(server) -> None:
    with LLVMClient(server.url) as client:
        for i in range(3):
            client.run_inference(MODEL, f"q{i}")
        session = client.async_client._transport._session
        assert session is not None and not session.closed
        client.list_models()
        assert client.async_client._transport._session is session
    assert session.closed
    assert client.loop_thread.loop.is_closed()


def test_sync_client_state_and_settings_pass_through(server) -> None:
    with LLVMClient(server.url, default_model=MODEL, api_key="k1") as client:
        assert client.get_default_model() == MODEL
        assert client.get_api_key() == "k1"
        client.set_api_key("k2")
        assert client.get_api_key() == client.config.api_key == "k2"  # one truth, not two
        client.set_api_key("")
        assert client.get_api_key() is None and client.config.api_key is None
        assert client.config.base_url == server.url
        assert (client.queue_depth, client.active_requests) == (0, 0)
        assert client.breaker_state == "closed"


def test_close_is_idempotent_and_stops_the_loop_thread() -> None:
    before = threading.active_count()
    client = LLVMClient("http://127.0.0.1:1")
    assert threading.active_count() == before + 1
    client.close()
    client.close()
    assert threading.active_count() == before


def test_the_sync_client_answers_on_either_loop(server, monkeypatch) -> None:
    for kind in ("uvloop", "asyncio"):
        monkeypatch.setenv(ENV_EVENT_LOOP, kind)
        with LLVMClient(server.url) as client:
            assert type(client.loop_thread.loop).__module__.split(".")[0] == kind
            assert client.run_inference(MODEL, "hi")["outputs"] == reference_output(MODEL, "hi")


def test_sync_client_takes_one_finished_config_or_keywords_not_both(server) -> None:
    config = resolve_config(base_url=server.url, default_model=MODEL, max_retries=0)
    with LLVMClient(config=config) as client:
        assert client.config is config
        assert client.run_inference(None, "hi")["outputs"] == reference_output(MODEL, "hi")
    with pytest.raises(TypeError, match="either config= or settings"):
        LLVMClient(config=config, max_retries=2)
    with pytest.raises(TypeError, match="max_retrys"):
        LLVMClient(server.url, max_retrys=2)  # type: ignore[call-arg]
