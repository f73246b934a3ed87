"""The API key never shows: not in errors, reprs, logs, or tracebacks with their locals.

A canary key goes to a server that echoes the Authorization header (and the bare key) back in
its error bodies; then every place a person or a log could see is searched for it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

import pytest
from aiohttp import web

from llvm_batch import (
    AsyncLLVMClient,
    AuthenticationError,
    ClientConfig,
    InvalidResponseError,
    LLVMClient,
    LLVMConnectionError,
    ServerError,
)
from llvm_batch.errors import redact

# Module constants, not locals: a traceback's captured locals must not hold the key themselves.
CANARY = "sk-CANARY-7f3a9c1e5b2d4f60"
MODEL = "m1"


def echo_key(seen, request):
    """Answer inference with an error status whose body repeats the caller's credentials."""
    auth = request.headers.get("Authorization", "")
    bare = auth.removeprefix("Bearer ")
    status = 401 if seen.inputs == "auth" else 500
    if seen.inputs == "bad-json":
        return web.Response(text=f'{{"outputs": "{auth} {bare}', content_type="application/json")
    if seen.inputs == "plain":
        return web.Response(status=status, text=f"got header {auth} and key={bare}")
    return web.json_response(
        {"error": f"rejected {auth!r}", "detail": {"echo": auth, "key": bare}},
        status=status,
    )


def where_a_person_could_see(error: BaseException, client: object) -> dict[str, str]:
    return {
        "str": str(error),
        "repr": repr(error),
        "body": str(getattr(error, "body", "")),
        "message": str(getattr(error, "message", "")),
        "client repr": repr(client),
        "traceback with locals": "".join(
            traceback.TracebackException.from_exception(error, capture_locals=True).format()
        ),
    }


async def provoke(url: str, inputs: str, fake_time) -> tuple[BaseException, str]:
    async with AsyncLLVMClient(
        url, api_key=CANARY, max_retries=1, debug=True, **fake_time.client_kwargs()
    ) as client:
        try:
            await client.run_inference(MODEL, inputs)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            return error, repr(client)
    raise AssertionError("the call should have failed")


@pytest.mark.parametrize(
    ("inputs", "error_class"),
    [
        ("json", ServerError),
        ("plain", ServerError),
        ("auth", AuthenticationError),
        ("bad-json", InvalidResponseError),
    ],
)
def test_the_key_is_in_no_error_repr_log_or_traceback(
    scripted, fake_time, caplog, inputs, error_class
) -> None:
    async def main():
        async with scripted(echo_key) as app:
            return app, *(await provoke(app.url, inputs, fake_time))

    # Every logger at DEBUG, and llvm_batch's own level restored afterwards.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="llvm_batch"):
        app, error, client_repr = asyncio.run(main())

    assert type(error) is error_class
    # The server did see (and echo) the key, so the checks below are not vacuous.
    assert app.seen[0].headers["Authorization"] == f"Bearer {CANARY}"
    assert "***" in error.body
    assert any(r.name == "llvm_batch" for r in caplog.records)
    places = where_a_person_could_see(error, client_repr)
    places["logs"] = "\n".join(r.getMessage() for r in caplog.records)
    leaks = [name for name, text in places.items() if CANARY in text]
    assert leaks == []


def test_the_sync_client_keeps_the_key_out_of_errors_and_tracebacks(scripted_thread) -> None:
    app = scripted_thread(echo_key)
    with LLVMClient(app.url, api_key=CANARY, max_retries=0) as client:
        with pytest.raises(AuthenticationError) as info:
            client.run_inference(MODEL, "auth")
        places = where_a_person_could_see(info.value, client)

    assert app.seen[0].headers["Authorization"] == f"Bearer {CANARY}"
    assert [name for name, text in places.items() if CANARY in text] == []


def test_connection_errors_do_not_carry_the_key(closed_url, fake_time) -> None:
    async def main():
        async with AsyncLLVMClient(
            closed_url, api_key=CANARY, max_retries=0, **fake_time.client_kwargs()
        ) as client:
            try:
                await client.list_models()
            except LLVMConnectionError as error:
                return error, repr(client)
        raise AssertionError("the call should have failed")

    error, client_repr = asyncio.run(main())
    places = where_a_person_could_see(error, client_repr)
    assert [name for name, text in places.items() if CANARY in text] == []


def test_reprs_say_whether_a_key_is_set_never_which() -> None:
    client = AsyncLLVMClient("http://127.0.0.1:1", api_key=CANARY)
    assert "api_key=set" in repr(client)
    assert CANARY not in repr(client)
    assert CANARY not in repr(client.config)
    assert CANARY not in repr(ClientConfig(api_key=CANARY))
    assert "api_key=unset" in repr(AsyncLLVMClient("http://127.0.0.1:1"))
    with LLVMClient("http://127.0.0.1:1", api_key=CANARY) as sync_client:
        assert repr(sync_client).startswith("<LLVMClient ")
        assert CANARY not in repr(sync_client)


def test_the_values_that_carry_a_key_never_show_it() -> None:
    """The finished values a key travels in (batch options, a frame call) hide it too."""
    from llvm_batch.batch import BatchOptions
    from llvm_batch.batch.prompts import PromptSpec
    from llvm_batch.frame_options import FrameCall, split_keywords

    options = BatchOptions.from_kwargs({"api_key": CANARY, "model": "m"})
    assert options.client.api_key == CANARY
    _, run, client_options = split_keywords({"api_key": CANARY})
    call = FrameCall.resolve(PromptSpec(), "m", run, client_options)
    assert call.config.api_key == CANARY
    shown = [repr(options), str(options.shaping()), repr(call), str(call)]
    assert [text for text in shown if CANARY in text] == []


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {CANARY}",
        f'{{"auth": "bearer {CANARY}"}}',
        f"key={CANARY}; again {CANARY}",
    ],
)
def test_redact_removes_the_secret_and_any_bearer_token(text) -> None:
    cleaned = redact(text, [CANARY, None, ""])
    assert CANARY not in cleaned
    assert "***" in cleaned
    assert redact("Bearer some-other-token here") == "Bearer *** here"
