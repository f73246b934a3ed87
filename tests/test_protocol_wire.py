"""Each client method on the wire: URL, headers, body and result, seen by a recording server."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from llvm_batch import AsyncLLVMClient, InvalidResponseError
from llvm_batch.server import reference_output

WALL = 1_712_345_678.25


def test_list_models_is_a_get_of_models(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            return app, await client.model_ids()

    app, models = asyncio.run(main())

    assert models == ["m1", "m2"]
    [seen] = app.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/models", None)
    assert seen.headers["Accept"] == "application/json"


def test_list_models_accepts_entries_given_as_objects(scripted) -> None:
    def handler(seen, request):
        return web.json_response({"models": [{"id": "a"}, {"model_id": "b"}, "c"]})

    async def main():
        async with scripted(handler) as app, AsyncLLVMClient(app.url) as client:
            return await client.model_ids()

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_get_model_info_url_encodes_the_model_id(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url + "/") as client:
            return app, await client.get_model_info("org/model a")

    app, info = asyncio.run(main())

    assert info == {"model_id": "org/model a", "status": "loaded", "details": {"n": 1}}
    [seen] = app.seen
    assert (seen.method, seen.path) == ("GET", "/models/org%2Fmodel%20a")


def test_run_inference_posts_only_the_given_options(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            bare = await client.run_inference("org/m 1", "Hello there")
            full = await client.run_inference(
                "m1",
                {"text": "hi"},
                max_tokens=2,
                temperature=0.0,
                top_k=0,
                top_p=0.9,
                params={"stop": ["\n"]},
                seed=7,
            )
            return app, bare, full

    app, bare, full = asyncio.run(main())

    first, second = app.seen
    assert (first.method, first.path) == ("POST", "/models/org%2Fm%201/inference")
    assert first.body == {"inputs": "Hello there"}
    assert first.headers["Content-Type"].startswith("application/json")
    assert second.path == "/models/m1/inference"
    # Falsy values that were given (0.0, 0) are sent; nothing that was not given is.
    assert second.body == {
        "inputs": {"text": "hi"},
        "max_tokens": 2,
        "temperature": 0.0,
        "top_k": 0,
        "top_p": 0.9,
        "params": {"stop": ["\n"]},
        "seed": 7,
    }
    assert bare == {
        "model_id": "org/m 1",
        "outputs": reference_output("org/m 1", "Hello there"),
        "metadata": {"t": 1},
    }
    assert full["outputs"] == reference_output("m1", {"text": "hi"}, 2)


def test_idempotency_key_header_only_when_given(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            await client.run_inference("m1", "a", idempotency_key="row-17")
            await client.run_inference("m1", "b")
            return app

    with_key, without = asyncio.run(main()).seen
    assert with_key.headers["Idempotency-Key"] == "row-17"
    assert "Idempotency-Key" not in without.headers


def test_chat_sends_one_prompt_and_returns_a_chat_completion(scripted) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": {"q": [1, 2], "lang": "fr-é"}},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "Why?"},
    ]

    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url, wall_clock=lambda: WALL) as client:
            return app, await client.chat("m2", messages, max_tokens=50)

    app, result = asyncio.run(main())

    prompt = 'system: Be brief.\nuser: {"q":[1,2],"lang":"fr-é"}\nassistant: null\nuser: Why?'
    [seen] = app.seen
    assert seen.path == "/models/m2/inference"
    assert seen.body == {"inputs": prompt, "max_tokens": 50}
    assert result == {
        "id": "llvm-1712345678250",
        "model": "m2",
        "object": "chat.completion",
        "created": 1712345678,
        "content": reference_output("m2", prompt, 50),
        "role": "assistant",
        "finish_reason": None,
        "usage": {"input_tokens": None, "output_tokens": None},
    }


@pytest.mark.parametrize("messages", ["user: hi", [{"content": "no role"}], [42]])
def test_chat_rejects_malformed_messages_before_sending(scripted, messages) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            with pytest.raises(ValueError, match="role"):
                await client.chat("m1", messages)
            return app

    assert asyncio.run(main()).seen == []


def test_model_id_none_uses_the_default_model(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url, default_model="m2") as client:
            await client.run_inference(None, "x")
            await client.get_model_info()
            chat = await client.chat(None, [{"role": "user", "content": "y"}])
            return app, chat, client.get_default_model()

    app, chat, default = asyncio.run(main())
    assert [seen.path for seen in app.seen] == [
        "/models/m2/inference",
        "/models/m2",
        "/models/m2/inference",
    ]
    assert chat["model"] == "m2"
    assert default == "m2"


def test_no_model_at_all_is_a_value_error_and_sends_nothing(scripted, monkeypatch) -> None:
    monkeypatch.delenv("LLVM_DEFAULT_MODEL", raising=False)

    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            for call in (
                client.run_inference(None, "x"),
                client.get_model_info(),
                client.chat(None, [{"role": "user", "content": "y"}]),
            ):
                with pytest.raises(ValueError, match="default_model"):
                    await call
            return app

    assert asyncio.run(main()).seen == []


def test_authorization_header_present_iff_a_key_is_set(scripted, monkeypatch) -> None:
    monkeypatch.delenv("LLVM_API_KEY", raising=False)

    async def main():
        async with scripted() as app:
            async with AsyncLLVMClient(app.url) as client:
                assert client.get_api_key() is None
                await client.list_models()
                client.set_api_key("key-1")
                assert client.get_api_key() == "key-1"
                await client.list_models()
                client.set_api_key(None)
                assert client.get_api_key() is None
                await client.list_models()
            async with AsyncLLVMClient(app.url, api_key="key-2") as client:
                await client.run_inference("m1", "x")
            return app

    no_key, key_1, cleared, key_2 = asyncio.run(main()).seen
    assert "Authorization" not in no_key.headers
    assert key_1.headers["Authorization"] == "Bearer key-1"
    assert "Authorization" not in cleared.headers
    assert key_2.headers["Authorization"] == "Bearer key-2"


def test_test_endpoint_true_when_the_server_answers(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            return app, await client.test_endpoint()

    app, ok = asyncio.run(main())
    assert ok is True
    assert [(seen.method, seen.path) for seen in app.seen] == [("GET", "/models")]


def test_test_endpoint_false_on_a_closed_port(closed_url, fake_time) -> None:
    async def main():
        async with AsyncLLVMClient(closed_url, **fake_time.client_kwargs()) as client:
            return await client.test_endpoint()

    assert asyncio.run(main()) is False
    assert fake_time.sleeps == []  # one attempt, no backoff


def test_test_endpoint_false_on_an_error_status_after_one_attempt(scripted, reply) -> None:
    async def main():
        async with scripted(lambda seen, request: reply(503)) as app:
            async with AsyncLLVMClient(app.url) as client:
                return app, await client.test_endpoint()

    app, ok = asyncio.run(main())
    assert ok is False
    assert len(app.seen) == 1


@pytest.mark.parametrize(
    ("operation", "answer"),
    [
        ("list", {"model_ids": []}),
        ("list", ["m1"]),
        ("inference", {"result": "no outputs field"}),
        ("info", ["not", "an", "object"]),
    ],
)
def test_a_200_with_the_wrong_shape_is_an_invalid_response(scripted, operation, answer) -> None:
    async def main():
        async with scripted(lambda seen, request: web.json_response(answer)) as app:
            async with AsyncLLVMClient(app.url, max_retries=0) as client:
                call = {
                    "list": client.list_models,
                    "inference": lambda: client.run_inference("m1", "x"),
                    "info": lambda: client.get_model_info("m1"),
                }[operation]
                with pytest.raises(InvalidResponseError, match="expected shape|JSON object"):
                    await call()

    asyncio.run(main())
