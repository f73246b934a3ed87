"""Backoff and Retry-After: the pure policy, then the delays the client really sleeps."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import pytest

from llvm_batch import (
    AsyncLLVMClient,
    BadRequestError,
    LLVMConnectionError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from llvm_batch.retry import parse_retry_after

MODEL = "m1"


# -- the policy, without I/O ---------------------------------------------------------------


def test_ceilings_double_from_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=6, delay=1.0, max_delay=10.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_without_jitter_the_wait_is_the_ceiling() -> None:
    policy = RetryPolicy(delay=0.5, jitter=False)
    assert [policy.backoff(n, random=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999999, 1.0])
def test_with_jitter_the_wait_is_in_the_upper_half_of_the_ceiling(draw) -> None:
    policy = RetryPolicy(delay=1.0, max_delay=60.0, jitter=True)
    for n in (1, 2, 3, 8):
        top = policy.ceiling(n)
        wait = policy.backoff(n, random=lambda: draw)
        assert top / 2 <= wait <= top
        assert wait == pytest.approx(top / 2 + draw * top / 2)


def test_decide_retries_retryable_errors_up_to_max_retries() -> None:
    policy = RetryPolicy(max_retries=2, delay=1.0, jitter=False)
    error = ServerError("boom", status=503)

    first, second, third = (policy.decide(n, error) for n in (1, 2, 3))
    assert (first.retry, first.delay, first.reason) == (True, 1.0, "retry 1 of 2")
    assert (second.retry, second.delay) == (True, 2.0)
    assert (third.retry, third.reason) == (False, "gave up after 3 attempts")


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad", status=400),
        LLVMConnectionError("TLS error", retryable=False),
        ValueError("not ours"),
    ],
)
def test_decide_never_retries_non_retryable_errors(error) -> None:
    decision = RetryPolicy(max_retries=5).decide(1, error)
    assert (decision.retry, decision.reason) == (False, "not retryable")


def test_retry_after_is_a_floor_not_a_ceiling() -> None:
    policy = RetryPolicy(max_retries=3, delay=1.0, max_delay=4.0, jitter=False)
    slow = RateLimitError("slow down", status=429, retry_after=30.0)
    soon = RateLimitError("slow down", status=429, retry_after=0.5)

    assert policy.decide(1, slow).delay == 30.0  # above max_delay: the server wins
    assert policy.decide(3, soon).delay == 4.0  # below the backoff: the backoff wins


def test_zero_retries_means_one_attempt() -> None:
    assert RetryPolicy(max_retries=0).decide(1, ServerError("x", status=500)).retry is False


def test_policy_is_immutable() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().max_retries = 5  # type: ignore[misc]


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW + 90), 90.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds_and_http_dates(header, seconds) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


# -- the delays the client sleeps ----------------------------------------------------------


def failing_then(status_count: int, reply, status: int = 503, **headers: str):
    """A handler failing the first ``status_count`` inference requests, then answering."""

    def handler(seen, request):
        if seen.method == "POST" and status_count > handler.failures:
            handler.failures += 1
            return reply(status, "try later", **headers)
        return None

    handler.failures = 0
    return handler


def run_call(scripted, fake_time, handler, **client_kwargs):
    """One inference through a scripted server; returns (app, outcome-or-error)."""

    async def main():
        async with scripted(handler) as app:
            async with AsyncLLVMClient(
                app.url, **fake_time.client_kwargs(), **client_kwargs
            ) as client:
                try:
                    return app, await client.run_inference(MODEL, "x")
                except Exception as error:  # noqa: BLE001 - the test inspects it
                    return app, error

    return asyncio.run(main())


def test_backoff_without_jitter_is_exactly_1_2_4(scripted, fake_time, reply) -> None:
    app, error = run_call(
        scripted, fake_time, failing_then(99, reply), retry_delay=1, retry_jitter=False
    )

    assert isinstance(error, ServerError)
    assert error.attempts == 4
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert len(app.seen) == 4


def test_backoff_is_capped_by_max_retry_delay(scripted, fake_time, reply) -> None:
    run_call(
        scripted,
        fake_time,
        failing_then(99, reply),
        max_retries=5,
        retry_delay=1,
        max_retry_delay=3,
        retry_jitter=False,
    )
    assert fake_time.sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(("draw", "expected"), [(0.0, [0.5, 1.0, 2.0]), (1.0, [1.0, 2.0, 4.0])])
def test_jittered_backoff_stays_within_half_to_full_ceiling(
    scripted, fake_time, reply, draw, expected
) -> None:
    run_call(scripted, fake_time, failing_then(99, reply), retry_delay=1, random=lambda: draw)
    assert fake_time.sleeps == expected


def test_jitter_is_on_by_default(scripted, fake_time, reply) -> None:
    run_call(scripted, fake_time, failing_then(99, reply), random=lambda: 0.5)
    assert fake_time.sleeps == [0.75, 1.5, 3.0]


def test_a_success_after_retries_returns_the_answer(scripted, fake_time, reply) -> None:
    app, answer = run_call(scripted, fake_time, failing_then(2, reply), retry_jitter=False)
    assert answer["outputs"].endswith("echo: x")
    assert fake_time.sleeps == [1.0, 2.0]
    assert len(app.seen) == 3


def test_retry_after_seconds_is_a_floor_on_the_wait(scripted, fake_time, reply) -> None:
    handler = failing_then(2, reply, status=429, **{"Retry-After": "7"})
    app, answer = run_call(scripted, fake_time, handler, retry_jitter=False)

    assert answer["outputs"].endswith("echo: x")
    assert fake_time.sleeps == [7.0, 7.0]


def test_a_short_retry_after_does_not_shorten_the_backoff(scripted, fake_time, reply) -> None:
    handler = failing_then(3, reply, status=503, **{"Retry-After": "1.5"})
    run_call(scripted, fake_time, handler, retry_jitter=False)
    assert fake_time.sleeps == [1.5, 2.0, 4.0]


def test_retry_after_http_date_is_read_against_the_wall_clock(scripted, fake_time, reply) -> None:
    # fake_time's wall clock starts at a whole second, so the date form is exact.
    when = formatdate(fake_time.wall_clock() + 30, usegmt=True)
    handler = failing_then(99, reply, status=429, **{"Retry-After": when})
    app, error = run_call(scripted, fake_time, handler, max_retries=2, retry_jitter=False)

    assert isinstance(error, RateLimitError)
    # First wait: 30 s until the date. By the second 429 the fake clock reached that date,
    # so the floor is 0 and the plain backoff (2 s) applies.
    assert fake_time.sleeps == [30.0, 2.0]
    assert error.retry_after == 0.0
    assert error.attempts == 3


def test_a_past_retry_after_date_leaves_the_backoff(scripted, fake_time, reply) -> None:
    when = formatdate(fake_time.wall_clock() - 3600, usegmt=True)
    handler = failing_then(1, reply, status=503, **{"Retry-After": when})
    run_call(scripted, fake_time, handler, retry_jitter=False)
    assert fake_time.sleeps == [1.0]


def test_a_429_pauses_other_requests_until_retry_after(scripted, fake_time, reply) -> None:
    """The server asked the client, not one request, to back off: new work waits too."""

    def handler(seen, request):
        if seen.inputs == "first":
            return reply(429, "slow down", **{"Retry-After": "20"})
        return None

    async def main():
        async with scripted(handler) as app:
            async with AsyncLLVMClient(
                app.url, max_retries=0, **fake_time.client_kwargs()
            ) as client:
                with pytest.raises(RateLimitError):
                    await client.run_inference(MODEL, "first")
                await client.run_inference(MODEL, "second")
            return app

    app = asyncio.run(main())
    assert fake_time.sleeps == [20.0]
    assert app.inputs == ["first", "second"]


def test_retry_after_that_is_not_finite_is_ignored() -> None:
    from llvm_batch.retry import parse_retry_after

    assert parse_retry_after("inf", now=0.0) is None
    assert parse_retry_after("nan", now=0.0) is None
    assert parse_retry_after("2.5", now=0.0) == 2.5


def test_a_retry_delay_at_the_cap_is_taken_and_max_retry_delay_follows_it() -> None:
    from llvm_batch.config import resolve_config

    config = resolve_config(
        base_url="http://127.0.0.1:1", retry_delay=60.0, max_retry_delay=60.0, environ={}
    )
    assert config.retry.delay == config.retry.max_delay == 60.0
