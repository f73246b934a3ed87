"""The circuit breaker: the state machine on an injected clock, then through the client."""

from __future__ import annotations

import asyncio

import pytest

from llvm_batch import (
    AsyncLLVMClient,
    AuthenticationError,
    BadRequestError,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**config) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    defaults = {"min_calls": 20, "open_seconds": 10.0, "max_open_seconds": 35.0}
    return CircuitBreaker(BreakerConfig(**{**defaults, **config}), clock=clock), clock


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_failure()


def succeed(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_success()


def trip(b: CircuitBreaker) -> None:
    fail(b, b.config.min_calls)
    assert b.state is OPEN


# -- the state machine ---------------------------------------------------------------------


def test_a_burst_of_failures_at_high_concurrency_does_not_open_it() -> None:
    """64 requests in flight failing within a millisecond are one burst, not an outage."""
    b, clock = breaker(min_calls=100)
    fail(b, 64)
    assert b.state is CLOSED
    assert b.window() == (64, 64)
    succeed(b, 200)  # the server answers again: the burst is diluted
    fail(b, 64)
    assert b.state is CLOSED
    assert b.total_trips == 0


def test_a_dead_server_opens_it_once_enough_calls_failed() -> None:
    b, _ = breaker(min_calls=100)
    fail(b, 99)
    assert b.state is CLOSED
    fail(b, 1)
    assert b.state is OPEN
    assert b.allow() is False
    assert b.total_trips == 1


def test_reading_the_state_changes_nothing() -> None:
    b, clock = breaker(min_calls=20)
    fail(b, 20)
    clock.now += 10.0  # the open period is over: it reads as half-open
    before = dict(vars(b))
    assert b.state is HALF_OPEN and b.state is HALF_OPEN
    assert dict(vars(b)) == before
    assert b.allow() is True  # acting on it moves it: the first probe goes out
    assert b.state is HALF_OPEN and dict(vars(b)) != before


def test_a_server_that_answers_most_requests_keeps_it_closed() -> None:
    """20% failures (a flaky or a full server) is the limiter's business, not the breaker's."""
    b, _ = breaker(min_calls=20, failure_rate=0.5)
    for _ in range(200):
        succeed(b, 4)
        fail(b, 1)
    assert b.state is CLOSED


def test_opens_on_the_failure_rate_not_a_run() -> None:
    b, _ = breaker(min_calls=10, failure_rate=0.5)
    for _ in range(4):
        fail(b, 1)
        succeed(b, 1)
    fail(b, 1)
    assert b.state is CLOSED  # 5 failures of 9: too few calls to judge
    succeed(b, 1)
    fail(b, 1)
    assert b.state is OPEN  # 6 of 11, never 2 in a row


def test_the_rate_counts_only_the_recent_time_window() -> None:
    b, clock = breaker(min_calls=10, failure_rate=0.5, window_seconds=10.0)
    fail(b, 9)
    clock.now += 10.0  # those fell out of the window
    assert b.window() == (0, 0)
    succeed(b, 5)
    fail(b, 4)
    assert b.state is CLOSED  # 4 of 9 now
    fail(b, 1)
    assert b.state is OPEN  # 5 of 10


def test_open_fails_fast_until_the_period_is_over_then_half_opens() -> None:
    b, clock = breaker()
    trip(b)
    assert b.retry_in() == 10.0
    clock.now += 9.5
    assert b.state is OPEN
    assert b.allow() is False
    assert b.retry_in() == pytest.approx(0.5)
    clock.now += 0.5
    assert b.state is HALF_OPEN
    assert b.retry_in() == 0.0


def test_half_open_ramps_traffic_back_in_and_closes() -> None:
    """1 request, then 2, then 4 in flight: a ramp, not two probes for the whole run."""
    b, clock = breaker(half_open_successes=4)
    trip(b)
    clock.now += 10
    assert [b.allow(), b.allow()] == [True, False]  # one probe first
    b.record_success()
    assert [b.allow(), b.allow(), b.allow()] == [True, True, False]  # then two
    b.record_success()
    b.record_success()
    assert b.state is HALF_OPEN
    assert [b.allow() for _ in range(9)] == [True] * 8 + [False]  # then eight
    b.record_success()
    assert b.state is CLOSED
    assert all(b.allow() for _ in range(100))


def test_a_neutral_outcome_in_half_open_gives_the_probe_back() -> None:
    b, clock = breaker()
    trip(b)
    clock.now += 10
    assert b.allow() is True
    assert b.allow() is False
    b.record_neutral()
    assert b.state is HALF_OPEN
    assert b.allow() is True


def test_open_period_grows_only_while_probes_fail_up_to_the_cap() -> None:
    b, clock = breaker(open_seconds=10.0, max_open_seconds=35.0)
    trip(b)
    periods = []
    for _ in range(4):
        periods.append(b.retry_in())
        clock.now += b.retry_in()
        assert b.allow()  # a probe...
        assert b.record_failure() is True  # ...that fails: open again, for longer
        assert b.state is OPEN
    periods.append(b.retry_in())
    assert periods == [10.0, 20.0, 35.0, 35.0, 35.0]
    assert b.total_trips == 5


def test_a_server_that_stays_healthy_brings_the_open_period_back_down() -> None:
    b, clock = breaker(open_seconds=10.0, half_open_successes=1, window_seconds=10.0)
    trip(b)
    clock.now += 10
    b.allow()
    b.record_failure()
    assert b.retry_in() == 20.0
    clock.now += 20
    succeed(b, 1)
    assert b.state is CLOSED
    trip(b)  # soon after closing: flapping, the period keeps growing
    assert b.retry_in() == 35.0
    clock.now += 35
    succeed(b, 1)
    clock.now += 10.0  # a whole window healthy
    trip(b)
    assert b.retry_in() == 10.0


def test_neutral_outcomes_neither_count_nor_dilute() -> None:
    b, _ = breaker(min_calls=10)
    fail(b, 9)
    for _ in range(50):
        b.record_neutral()
    assert b.window() == (9, 9)
    fail(b, 1)
    assert b.state is OPEN


def test_failures_reported_while_open_are_ignored() -> None:
    b, clock = breaker()
    trip(b)
    assert b.record_failure() is False  # a request sent before the trip, failing late
    assert b.retry_in() == 10.0
    clock.now += 10
    assert b.state is HALF_OPEN


# -- through the client --------------------------------------------------------------------


class Switch:
    """A handler answering inference with ``self.status`` (None: the normal answer)."""

    def __init__(self, reply, status: int | None = 500) -> None:
        self.reply = reply
        self.status = status

    def __call__(self, seen, request):
        if self.status is None:
            return None
        return self.reply(self.status, "scripted")


def client_for(app, fake_time, **breaker_config) -> AsyncLLVMClient:
    config = {
        "min_calls": 3,
        "open_seconds": 10.0,
        "max_open_seconds": 40.0,
        "half_open_successes": 2,
    }
    return AsyncLLVMClient(
        app.url,
        max_retries=0,
        breaker={**config, **breaker_config},
        **fake_time.client_kwargs(),
    )


async def infer(client: AsyncLLVMClient) -> Exception | None:
    try:
        await client.run_inference("m1", "x")
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error
    return None


def test_client_fails_fast_while_open_then_probes_and_closes(scripted, reply, fake_time) -> None:
    switch = Switch(reply, 500)

    async def main():
        async with scripted(switch) as app, client_for(app, fake_time) as client:
            errors = [await infer(client) for _ in range(3)]
            assert all(isinstance(e, ServerError) for e in errors)
            assert client.breaker_state == "open"

            sent = len(app.seen)
            fast = await infer(client)
            assert isinstance(fast, CircuitOpenError)
            assert len(app.seen) == sent  # nothing reached the server
            assert fast.retry_after == 10.0
            assert fast.operation == "inference" and fast.model == "m1"
            assert "circuit breaker is open" in str(fast)

            fake_time.advance(10)
            assert client.breaker_state == "half_open"
            switch.status = None
            assert await infer(client) is None
            assert client.breaker_state == "half_open"
            assert await infer(client) is None
            assert client.breaker_state == "closed"
            assert len(app.seen) == sent + 2

    asyncio.run(main())


def test_client_failed_probe_reopens_for_twice_as_long(scripted, reply, fake_time) -> None:
    async def main():
        async with scripted(Switch(reply, 503)) as app, client_for(app, fake_time) as client:
            for _ in range(3):
                await infer(client)
            waits = []
            for _ in range(3):
                waits.append(client.breaker_retry_in())
                fake_time.advance(client.breaker_retry_in())
                assert isinstance(await infer(client), ServerError)  # the probe
                assert isinstance(await infer(client), CircuitOpenError)
            waits.append(client.breaker_retry_in())
            return app, waits

    app, waits = asyncio.run(main())
    assert waits == [10.0, 20.0, 40.0, 40.0]
    assert len(app.seen) == 3 + 3


def test_breaker_opening_mid_retries_stops_the_request(scripted, reply, fake_time) -> None:
    async def main():
        async with scripted(Switch(reply, 502)) as app:
            async with AsyncLLVMClient(
                app.url,
                max_retries=5,
                breaker={"min_calls": 3, "open_seconds": 10.0, "window_seconds": 60.0},
                **fake_time.client_kwargs(),
            ) as client:
                return app, await infer(client)

    app, error = asyncio.run(main())
    assert isinstance(error, CircuitOpenError)
    assert error.attempts == 3
    assert len(app.seen) == 3


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 505, 408])
def test_every_5xx_counts_as_a_failure_retried_or_not(scripted, reply, fake_time, status) -> None:
    async def main():
        async with scripted(Switch(reply, status)) as app, client_for(app, fake_time) as client:
            errors = [await infer(client) for _ in range(4)]
            return app, errors

    app, errors = asyncio.run(main())
    assert all(isinstance(e, ServerError) for e in errors[:3])
    assert isinstance(errors[3], CircuitOpenError)
    assert len(app.seen) == 3


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, RateLimitError),
        (404, ModelNotFoundError),
        (400, BadRequestError),
        (401, AuthenticationError),
    ],
)
def test_429_and_other_4xx_do_not_open_the_breaker(
    scripted, reply, fake_time, status, error_class
) -> None:
    async def main():
        async with scripted(Switch(reply, status)) as app, client_for(app, fake_time) as client:
            errors = [await infer(client) for _ in range(10)]
            return app, client.breaker_state, errors

    app, state, errors = asyncio.run(main())
    assert state == "closed"
    assert all(isinstance(e, error_class) and e.status == status for e in errors)
    assert len(app.seen) == 10


def test_without_a_breaker_the_client_never_fails_fast(scripted, reply, fake_time) -> None:
    async def main():
        async with scripted(Switch(reply, 500)) as app:
            async with AsyncLLVMClient(
                app.url, max_retries=0, breaker=False, **fake_time.client_kwargs()
            ) as client:
                errors = [await infer(client) for _ in range(12)]
                return app, errors, client.breaker_state

    app, errors, state = asyncio.run(main())
    assert all(isinstance(e, ServerError) for e in errors)
    assert len(app.seen) == 12
    assert state == "disabled"
