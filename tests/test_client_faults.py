"""What the client does with each kind of failure: attempts, error class, logs and messages."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from llvm_batch import (
    AsyncLLVMClient,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    LLVMConnectionError,
    LLVMTimeoutError,
    ModelNotFoundError,
    RateLimitError,
    RedirectError,
    ServerError,
    protocol,
)
from llvm_batch.server import Faults, reference_output

MODEL = "m1"


def reset(seen, request):
    """Drop the connection without answering."""
    request.transport.abort()
    return web.Response()


async def truncated(seen, request):
    """Promise a long body, send a little of it, then hang up."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"outputs": "cut')
    request.transport.abort()
    return response


def bad_json(seen, request):
    return web.Response(text='{"outputs": "unterminated', content_type="application/json")


async def attempt(scripted, fake_time, handler, call=None, **client_kwargs):
    """Run one call against ``handler``; returns (app, answer or error)."""
    async with scripted(handler) as app:
        async with AsyncLLVMClient(
            app.url, retry_jitter=False, **fake_time.client_kwargs(), **client_kwargs
        ) as client:
            try:
                if call is None:
                    return app, await client.run_inference(MODEL, "x")
                return app, await call(client)
            except Exception as error:  # noqa: BLE001 - the test inspects it
                return app, error


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (408, ServerError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
    ],
)
def test_retryable_statuses_get_one_plus_max_retries_attempts(
    scripted, reply, fake_time, status, error_class
) -> None:
    app, error = asyncio.run(
        attempt(scripted, fake_time, lambda seen, request: reply(status), max_retries=3)
    )

    assert type(error) is error_class
    assert (error.status, error.attempts, error.retryable) == (status, 4, True)
    assert len(app.seen) == 4
    assert fake_time.sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("handler", "error_class", "error_type", "status"),
    [
        (bad_json, InvalidResponseError, "invalid_response", 200),
        (reset, LLVMConnectionError, "connection", None),
        (truncated, LLVMConnectionError, "connection", None),
    ],
    ids=["bad-json-200", "connection-reset", "truncated-body"],
)
def test_broken_answers_are_retried_then_raised(
    scripted, fake_time, handler, error_class, error_type, status
) -> None:
    app, error = asyncio.run(attempt(scripted, fake_time, handler, max_retries=2))

    assert type(error) is error_class
    assert (error.attempts, error.error_type, error.status) == (3, error_type, status)
    assert error.retryable is True
    assert len(app.seen) == 3


def test_a_bad_json_error_quotes_what_the_server_sent(scripted, fake_time) -> None:
    _, error = asyncio.run(attempt(scripted, fake_time, bad_json, max_retries=0))
    assert error.body == '{"outputs": "unterminated'
    assert "not valid JSON" in str(error) and "HTTP 200" in str(error)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, ModelNotFoundError),
        (422, BadRequestError),
    ],
)
def test_non_retryable_statuses_get_exactly_one_attempt(
    scripted, reply, fake_time, status, error_class
) -> None:
    app, error = asyncio.run(
        attempt(scripted, fake_time, lambda seen, request: reply(status), max_retries=3)
    )

    assert type(error) is error_class
    assert (error.status, error.attempts, error.retryable) == (status, 1, False)
    assert len(app.seen) == 1
    assert fake_time.sleeps == []


def test_max_retries_zero_means_a_single_attempt(scripted, reply, fake_time) -> None:
    app, error = asyncio.run(
        attempt(scripted, fake_time, lambda seen, request: reply(503), max_retries=0)
    )
    assert isinstance(error, ServerError) and error.attempts == 1
    assert len(app.seen) == 1


def test_a_timeout_is_retried_then_raised(scripted, fake_time) -> None:
    async def main():
        release = asyncio.Event()

        async def stall(seen, request):
            await release.wait()

        async with scripted(stall) as app:
            try:
                async with AsyncLLVMClient(
                    app.url, max_retries=1, timeout=0.05, **fake_time.client_kwargs()
                ) as client:
                    with pytest.raises(LLVMTimeoutError) as info:
                        await client.run_inference(MODEL, "x")
            finally:
                release.set()  # the stalled handlers must end before the server stops
            return app, info.value

    app, error = asyncio.run(main())
    assert isinstance(error, TimeoutError)
    assert (error.attempts, error.error_type, error.retryable) == (2, "timeout", True)
    assert "did not answer in time" in str(error)
    assert len(app.seen) == 2


def test_a_refused_connection_is_retried_then_raised(closed_url, fake_time) -> None:
    async def main():
        async with AsyncLLVMClient(
            closed_url, max_retries=2, retry_jitter=False, **fake_time.client_kwargs()
        ) as client:
            with pytest.raises(LLVMConnectionError) as info:
                await client.list_models()
            return info.value

    error = asyncio.run(main())
    assert error.attempts == 3
    assert isinstance(error, ConnectionError)
    assert "could not connect" in str(error)
    assert fake_time.sleeps == [1.0, 2.0]


# -- the reference server's fault knobs ----------------------------------------------------


def run_reference(server, fake_time, **call_kwargs):
    async def main():
        async with AsyncLLVMClient(
            server.url, retry_jitter=False, **fake_time.client_kwargs()
        ) as client:
            call = protocol.inference("llvm-model-1", "hello", {})
            return await client.send(call, **call_kwargs)

    return asyncio.run(main())


def test_reference_resets_end_in_a_connection_error_after_4_attempts(
    make_server, fake_time
) -> None:
    server = make_server(faults=Faults(reset_rate=1.0))
    outcome = run_reference(server, fake_time)

    assert type(outcome.error) is LLVMConnectionError
    assert outcome.attempts == outcome.error.attempts == 4
    assert outcome.http_status is None
    assert server.stats.faults["reset"] == 4
    assert outcome.retry_wait_s == 7.0


def test_reference_bad_json_ends_in_an_invalid_response_after_4_attempts(
    make_server, fake_time
) -> None:
    server = make_server(faults=Faults(bad_json_rate=1.0))
    outcome = run_reference(server, fake_time)

    assert type(outcome.error) is InvalidResponseError
    assert outcome.error.attempts == 4
    assert outcome.http_status == 200
    assert server.stats.faults["bad_json"] == 4


def test_reference_fail_first_succeeds_on_attempt_2_with_one_idempotency_key(
    make_server, fake_time
) -> None:
    server = make_server(faults=Faults(fail_first=1))
    outcome = run_reference(server, fake_time, idempotency_key="row-1")

    assert outcome.error is None
    assert outcome.value["outputs"] == reference_output("llvm-model-1", "hello")
    assert (outcome.attempts, outcome.http_status, outcome.retry_wait_s) == (2, 200, 1.0)
    assert dict(server.stats.statuses) == {503: 1, 200: 1}
    assert len(server.stats.keys) == 1  # the retry carried the same key


# -- debug logging -------------------------------------------------------------------------


def test_debug_logs_each_attempt_with_its_retry_decision(
    scripted, reply, fake_time, caplog
) -> None:
    statuses = iter([503, 429])

    def flaky(seen, request):
        status = next(statuses, None)
        return reply(status) if status else None

    with caplog.at_level(logging.DEBUG, logger="llvm_batch"):
        asyncio.run(attempt(scripted, fake_time, flaky, debug=True))
        asyncio.run(attempt(scripted, fake_time, lambda seen, request: reply(404), debug=True))

    records = [r for r in caplog.records if r.name == "llvm_batch"]
    messages = [r.getMessage() for r in records]
    assert all(r.levelno == logging.DEBUG for r in records)
    assert len(messages) == 4
    first, second, third, fourth = messages
    assert first.startswith("POST /models/m1/inference -> 503 in ")
    assert first.endswith("; retry 1 of 3 in 1.00 s")
    assert second.startswith("POST /models/m1/inference -> 429 in ")
    assert second.endswith("; retry 2 of 3 in 2.00 s")
    assert third.startswith("POST /models/m1/inference -> 200 in ") and third.endswith("; ok")
    assert fourth.startswith("POST /models/m1/inference -> 404 in ")
    assert fourth.endswith("; giving up (model_not_found)")


def test_without_debug_nothing_is_logged(scripted, reply, fake_time, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="llvm_batch"):
        asyncio.run(attempt(scripted, fake_time, lambda seen, request: reply(503)))
    assert [r for r in caplog.records if r.name == "llvm_batch"] == []


def test_debug_logs_connection_failures_as_no_answer(closed_url, fake_time, caplog) -> None:
    async def main():
        async with AsyncLLVMClient(
            closed_url, max_retries=1, debug=True, **fake_time.client_kwargs()
        ) as client:
            await client.test_endpoint()

    with caplog.at_level(logging.DEBUG, logger="llvm_batch"):
        asyncio.run(main())
    [record] = [r for r in caplog.records if r.name == "llvm_batch"]
    assert record.getMessage().startswith("GET /models -> no answer in ")
    assert record.getMessage().endswith("giving up (connection)")


# -- error messages ------------------------------------------------------------------------


def test_an_error_names_operation_model_status_server_text_and_attempts(
    scripted, reply, fake_time
) -> None:
    app, error = asyncio.run(
        attempt(scripted, fake_time, lambda seen, request: reply(503, "backend exploded"))
    )

    text = str(error)
    assert text.startswith("inference on model 'm1' failed: 503 Service Unavailable")
    assert "backend exploded" in text
    assert "HTTP 503" in text
    assert "after 4 attempts" in text
    assert (error.operation, error.model, error.status) == ("inference", "m1", 503)
    assert error.body == '{"error": "backend exploded"}'
    assert repr(error) == f"ServerError({text!r})"
    assert error.next_retry_at is None  # gave up: there is no next retry


def test_error_for_other_operations_names_them(scripted, reply, fake_time) -> None:
    _, error = asyncio.run(
        attempt(
            scripted,
            fake_time,
            lambda seen, request: reply(404, "model 'nope' not found"),
            call=lambda client: client.get_model_info("nope"),
        )
    )
    assert str(error).startswith("model info on model 'nope' failed: 404 Not Found")
    assert "after 1 attempt;" in str(error)


@pytest.mark.parametrize(
    "huge",
    [
        lambda: web.Response(status=500, text="x" * 100_000),
        lambda: web.json_response({"error": "y" * 100_000}, status=500),
        lambda: web.json_response({"detail": {"message": "z" * 100_000}}, status=500),
    ],
    ids=["plain-text", "json-error", "json-detail"],
)
def test_a_huge_error_body_is_cut_to_a_bounded_excerpt(scripted, fake_time, huge) -> None:
    _, error = asyncio.run(
        attempt(scripted, fake_time, lambda seen, request: huge(), max_retries=0)
    )

    assert isinstance(error, ServerError)
    assert len(error.body) < 350
    assert "more chars]" in error.body
    assert len(error.message) < 350
    assert len(str(error)) < 1000
    assert len(repr(error)) < 1100


@pytest.mark.parametrize("code", [301, 302, 303])
def test_a_redirect_that_turns_a_post_into_a_get_is_an_error_and_not_retried(
    scripted, fake_time, code
) -> None:
    def moved(seen, request):
        if seen.method == "POST":
            return web.Response(status=code, headers={"Location": "/v2/elsewhere"})
        return web.json_response({"outputs": "an answer to some other question"})

    app, error = asyncio.run(attempt(scripted, fake_time, moved))

    assert isinstance(error, RedirectError)
    assert (error.status, error.error_type, error.retryable, error.attempts) == (
        code,
        "redirect",
        False,
        1,
    )
    assert f"to {app.url}/v2/elsewhere (HTTP {code})" in str(error)
    assert [s.method for s in app.seen] == ["POST", "GET"]  # once: no retry
    assert fake_time.sleeps == []


def test_a_redirected_get_is_followed(scripted, fake_time) -> None:
    def moved(seen, request):
        if seen.path == "/models":
            return web.Response(status=302, headers={"Location": "/models?page=1"})
        return None

    app, models = asyncio.run(attempt(scripted, fake_time, moved, call=lambda c: c.model_ids()))

    assert models == ["m1", "m2"]
    assert [s.path for s in app.seen] == ["/models", "/models?page=1"]
