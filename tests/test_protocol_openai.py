"""The OpenAI-compatible protocol: bodies and paths on the wire, answers read, errors worded,
rate-limit headers honoured, the protocol chosen once (argument, LLVM_PROTOCOL, CLI, job
file), token columns, ``df.llvm`` in OpenAI mode, and the official ``openai`` client against
our reference server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pandas as pd
import pytest
from aiohttp import web
from batch_support import invoke, invoke_run, prompts_table, read_rows, write_parquet

import llvm_batch  # noqa: F401  (registers df.llvm)
from llvm_batch import AsyncLLVMClient, LLVMClient
from llvm_batch.batch import run_batch
from llvm_batch.errors import (
    AuthenticationError,
    InvalidResponseError,
    ModelNotFoundError,
    RateLimitError,
)
from llvm_batch.protocols.base import parse_reset, retry_after_from
from llvm_batch.server import Faults, reference_output

MODEL = "llvm-model-1"


def _client(url: str, **options) -> AsyncLLVMClient:
    return AsyncLLVMClient(url, protocol="openai", max_retries=0, **options)


# -- on the wire ---------------------------------------------------------------------------


def test_plain_prompt_is_one_user_turn_with_options_where_servers_read_them(scripted) -> None:
    async def main():
        async with scripted() as app, _client(app.url, api_key="sk-wire") as client:
            answer = await client.run_inference(
                "m1",
                "Hello there",
                max_tokens=3,
                temperature=0.5,
                top_p=0.9,
                top_k=40,
                params={"seed": 7, "stop": ["\n"]},
            )
            return app, answer

    app, answer = asyncio.run(main())

    [seen] = app.seen
    assert (seen.method, seen.path) == ("POST", "/chat/completions")
    assert seen.body == {
        "model": "m1",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "stop": ["\n"],
    }
    assert seen.headers["Authorization"] == "Bearer sk-wire"
    assert answer["choices"][0]["message"]["content"] == reference_output("m1", "Hello there", 3)


def test_openai_completions_sends_plain_prompts_as_raw_text(scripted) -> None:
    async def main():
        async with scripted() as app:
            async with AsyncLLVMClient(app.url, protocol="openai-completions") as client:
                await client.run_inference("m2", "Once upon", max_tokens=2)
                chat = await client.chat("m2", [{"role": "user", "content": "hi"}])
            return app, chat

    app, chat = asyncio.run(main())

    completion, conversation = app.seen
    assert (completion.path, completion.body) == (
        "/completions",
        {"model": "m2", "prompt": "Once upon", "max_tokens": 2},
    )
    assert conversation.path == "/chat/completions"  # conversations stay chat
    assert chat["content"] == reference_output("m2", "hi") and chat["finish_reason"] == "stop"


def test_chat_sends_the_messages_as_they_are(scripted) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "parts stay parts"}]},
    ]

    async def main():
        async with scripted() as app, _client(app.url) as client:
            return app, await client.chat("m1", messages, temperature=0.0)

    app, result = asyncio.run(main())

    [seen] = app.seen
    assert seen.body == {"model": "m1", "messages": messages, "temperature": 0.0}
    assert result["role"] == "assistant" and result["model"] == "m1"


def test_models_are_read_from_the_data_list(scripted) -> None:
    def handler(seen, request):
        if seen.path == "/models":
            return web.json_response({"object": "list", "data": [{"id": "a"}, {"id": "b/c"}]})
        return None

    async def main():
        async with scripted(handler) as app, _client(app.url) as client:
            return await client.model_ids()

    assert asyncio.run(main()) == ["a", "b/c"]


def test_model_info_falls_back_to_the_list_where_the_server_has_no_route(scripted) -> None:
    def handler(seen, request):
        if seen.path.startswith("/models/"):
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"data": [{"id": "m1", "owned_by": "me"}]})

    async def main():
        async with scripted(handler) as app, _client(app.url) as client:
            info = await client.get_model_info("m1")
            with pytest.raises(ModelNotFoundError) as missing:
                await client.get_model_info("m9")
            return info, missing.value

    info, missing = asyncio.run(main())

    assert info == {"id": "m1", "owned_by": "me"}
    assert "does not offer model 'm9' (it offers: m1)" in str(missing)
    assert missing.status == 404


def test_an_answer_without_choices_is_an_invalid_response(scripted) -> None:
    def handler(seen, request):
        return web.json_response({"outputs": "an LLVM answer"}) if seen.method == "POST" else None

    async def main():
        async with scripted(handler) as app, _client(app.url) as client:
            with pytest.raises(InvalidResponseError) as caught:
                await client.run_inference("m1", "x")
            return caught.value

    error = asyncio.run(main())
    assert 'expected shape {"choices": [{"message": {"content": ...}}]}' in str(error)
    assert error.status == 200 and "an LLVM answer" in (error.body or "")


# -- errors and rate limits ----------------------------------------------------------------


def test_openai_error_bodies_are_worded_for_people(scripted) -> None:
    body = {
        "error": {
            "message": "Incorrect API key provided: sk-****cret.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }

    def handler(seen, request):
        return web.json_response(body, status=401)

    async def main():
        async with scripted(handler) as app, _client(app.url, api_key="sk-secret") as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.run_inference("m1", "x")
            return caught.value

    error = asyncio.run(main())
    text = str(error)
    assert "401 Unauthorized: Incorrect API key provided: sk-****cret." in text
    assert "(invalid_request_error, invalid_api_key)" in text
    assert "sk-secret" not in text + repr(error) + (error.body or "")


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "2"}, 2.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}, 1.5),
        (
            {
                "x-ratelimit-remaining-requests": "12",
                "x-ratelimit-reset-requests": "9s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            360.0,
        ),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}, None),
    ],
)
def test_how_long_a_rate_limited_server_asks_us_to_wait(headers, wait) -> None:
    assert retry_after_from(headers, now=0.0) == wait


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("2", 2.0), ("x", None)],
)
def test_rate_limit_reset_durations(value, seconds) -> None:
    assert parse_reset(value) == seconds


def test_a_429_with_only_ratelimit_headers_pauses_for_the_reset(scripted) -> None:
    def handler(seen, request):
        if seen.method != "POST":
            return None
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "750ms"}
        body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rl"}}
        return web.json_response(body, status=429, headers=headers)

    async def main():
        async with scripted(handler) as app, _client(app.url) as client:
            with pytest.raises(RateLimitError) as caught:
                await client.run_inference("m1", "x")
            return caught.value

    error = asyncio.run(main())
    assert error.retry_after == 0.75
    assert "Rate limit reached (requests, rl)" in str(error)


# -- the protocol, chosen once -------------------------------------------------------------


def test_the_protocol_comes_from_the_argument_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LLVM_PROTOCOL", "OpenAI")
    assert AsyncLLVMClient().config.protocol == "openai"
    assert AsyncLLVMClient(protocol="llvm").config.protocol == "llvm"
    assert "protocol='openai'" in repr(LLVMClient())
    monkeypatch.setenv("LLVM_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="protocol must be one of llvm, openai, openai-comp"):
        AsyncLLVMClient()


def test_a_bad_protocol_exits_2_before_anything_is_sent(tmp_path: Path, server, monkeypatch):
    source = write_parquet(tmp_path / "in.parquet", prompts_table(3))
    flag = invoke_run(source, server.url, "--protocol", "x")
    monkeypatch.setenv("LLVM_PROTOCOL", "soap")
    env = invoke_run(source, server.url)

    assert flag.exit_code == 2 and "'x' is not one of" in flag.output
    assert env.exit_code == 2 and "got 'soap' (from LLVM_PROTOCOL)" in env.output
    assert server.stats.requests == 0


def test_cli_and_job_file_run_against_an_openai_server(tmp_path: Path, make_server) -> None:
    server = make_server(protocol="openai")
    source = write_parquet(tmp_path / "in.parquet", prompts_table(5))
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "in.parquet"\noutput = "out.parquet"\nmodel = "{MODEL}"\n'
        f'protocol = "openai"\nbase-url = "{server.url}"\nmax-tokens = 3\n'
    )

    result = invoke("run", "--config", str(job), "--no-progress")
    listed = invoke("models", "--protocol", "openai", "--base-url", server.url)
    info = invoke("info", MODEL, "--protocol", "openai", "--base-url", server.url)

    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "out.parquet")
    assert [r["llvm_output"] for r in rows] == [
        reference_output(MODEL, f"question {i}", 3) for i in range(5)
    ]
    assert server.url.endswith("/v1") and server.stats.inference_requests == 5
    assert listed.output.split() == ["llvm-model-1", "llvm-model-2"]
    assert json.loads(info.output)["id"] == MODEL
    assert source.exists()


def test_changing_the_protocol_refuses_to_resume_a_checkpoint(tmp_path: Path, make_server):
    llvm, openai_server = make_server(), make_server(protocol="openai")
    source = write_parquet(tmp_path / "in.parquet", prompts_table(30))
    # A run stopped by an outage leaves its LLVM checkpoint; resuming it over OpenAI would
    # mix answers of two protocols in one output.
    llvm.set_faults(error_rate=1.0)
    stopped = run_batch(
        source,
        tmp_path / "again.parquet",
        model=MODEL,
        base_url=llvm.url,
        max_outage=0.2,
        retry_delay=0.001,
        progress=False,
    )
    assert stopped.exit_code == 3
    result = invoke_run(
        source,
        openai_server.url,
        "--protocol",
        "openai",
        "--no-progress",
        out=tmp_path / "again.parquet",
    )
    assert result.exit_code == 2, result.output
    assert "--overwrite" in result.output


# -- token columns -------------------------------------------------------------------------


@pytest.mark.usefixtures("protocol")
def test_token_columns_totals_and_a_visible_length_finish(tmp_path: Path, server) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(6, empty_every=3))
    summary_path = tmp_path / "summary.json"

    result = invoke_run(
        source,
        server.url,
        "--max-tokens",
        "3",
        "--no-progress",
        "--summary-json",
        str(summary_path),
        out=tmp_path / "out.parquet",
    )

    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "out.parquet")
    ok = [r for r in rows if r["llvm_status"] == "ok"]
    skipped = [r for r in rows if r["llvm_status"] == "skipped"]
    # "question 1" is 2 words in; "llvm-model-1 echo: question 1" is 4 words, cut to 3.
    assert {(r["llvm_input_tokens"], r["llvm_output_tokens"]) for r in ok} == {(2, 3)}
    assert {r["llvm_finish_reason"] for r in ok} == {"length"}
    assert all(r["llvm_input_tokens"] is None for r in skipped)
    summary = json.loads(summary_path.read_text())
    assert (summary["input_tokens"], summary["output_tokens"]) == (2 * len(ok), 3 * len(ok))
    assert summary["truncated"] == len(ok) == 4
    assert "4 outputs cut short at max_tokens (finish_reason length)" in result.output
    assert f"tokens: {2 * len(ok)} in, {3 * len(ok)} out" in result.output


def test_df_llvm_chat_and_infer_in_openai_mode(make_server) -> None:
    server = make_server(protocol="openai", record_inputs=True)
    frame = pd.DataFrame(
        {"q": ["What is LLVM?", "What is SSA?"], "prompt": ["a b", "c"]}, index=[10, 20]
    )

    chat = frame.llvm.chat(
        MODEL, user="{q}", system="Be brief.", protocol="openai", base_url=server.url
    )
    plain = frame.llvm.infer(MODEL, protocol="openai", base_url=server.url, max_tokens=2)

    assert list(chat.index) == [10, 20]
    assert list(chat["llvm_output"]) == [
        reference_output(MODEL, f"system: Be brief.\nuser: {q}") for q in frame["q"]
    ]
    assert str(chat["llvm_input_tokens"].dtype) == "int32[pyarrow]"
    assert list(plain["llvm_output"]) == [reference_output(MODEL, p, 2) for p in frame["prompt"]]
    assert list(plain["llvm_finish_reason"]) == ["length", "length"]


# -- the official client against our reference server --------------------------------------


def test_the_official_openai_client_talks_to_the_reference_server(make_server) -> None:
    server = make_server(protocol="openai", api_key="sk-reference")
    client = openai.OpenAI(base_url=server.url, api_key="sk-reference", max_retries=0)

    models = [m.id for m in client.models.list()]
    model = client.models.retrieve(MODEL)
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi there"}], max_tokens=3
    )
    completion = client.completions.create(model=MODEL, prompt="Once upon a time")
    server.set_faults(rate_limit_rate=1.0, retry_after=2.0)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    server.set_faults(rate_limit_rate=0.0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    wrong_key = openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.models.list()
    client.close()
    wrong_key.close()

    assert models == ["llvm-model-1", "llvm-model-2"] and model.id == MODEL
    assert chat.choices[0].message.content == reference_output(MODEL, "Hi there", 3)
    assert chat.choices[0].finish_reason == "length"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (2, 3)
    assert completion.choices[0].text == reference_output(MODEL, "Once upon a time")
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert missing.value.body["code"] == "model_not_found"


def test_the_reference_server_faults_reach_openai_routes(make_server) -> None:
    server = make_server(protocol="openai", faults=Faults(fail_first=1))

    with LLVMClient(base_url=server.url, protocol="openai", retry_delay=0.001) as client:
        answer = client.chat(MODEL, [{"role": "user", "content": "hello"}])

    assert answer["content"] == reference_output(MODEL, "hello")
    assert server.stats.statuses[503] == 1 and server.stats.inference_requests == 2
