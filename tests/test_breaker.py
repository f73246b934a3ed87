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
    defaults = {"failure_threshold": 3, "open_seconds": 10.0, "max_open_seconds": 35.0}
    return CircuitBreaker(BreakerConfig(**{**defaults, **config}), clock=clock), clock


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_failure()


# -- the state machine ---------------------------------------------------------------------


def test_opens_after_a_run_of_consecutive_failures() -> None:
    b, _ = breaker()
    fail(b, 2)
    assert b.state is CLOSED
    fail(b, 1)
    assert b.state is OPEN
    assert b.allow() is False
    assert b.total_trips == 1


def test_a_success_breaks_the_run() -> None:
    b, _ = breaker()
    fail(b, 2)
    b.record_success()
    fail(b, 2)
    assert b.state is CLOSED


def test_opens_on_a_high_failure_rate_over_the_window() -> None:
    b, _ = breaker(failure_threshold=100, failure_rate=0.5, window=10, min_calls=10)
    for _ in range(4):
        b.record_failure()
        b.record_success()
    b.record_failure()
    assert b.state is CLOSED  # 5 failures of 9: too few outcomes to judge
    b.record_success()
    b.record_failure()
    assert b.state is OPEN  # the last 10 hold 5 failures: rate 0.5, never 2 in a row


def test_failure_rate_counts_only_the_recent_window() -> None:
    b, _ = breaker(failure_threshold=100, failure_rate=0.5, window=4, min_calls=4)
    b.record_failure()
    b.record_success()
    b.record_success()
    b.record_success()
    assert b.state is CLOSED  # 1 of 4
    b.record_failure()
    assert b.state is CLOSED  # window now S S S F: 1 of 4 (the first failure fell out)
    b.record_failure()
    assert b.state is OPEN  # S S F F: 2 of 4 = 0.5


def test_open_fails_fast_until_the_period_is_over_then_half_opens() -> None:
    b, clock = breaker()
    fail(b, 3)
    assert b.retry_in() == 10.0
    clock.now += 9.5
    assert b.state is OPEN
    assert b.allow() is False
    assert b.retry_in() == pytest.approx(0.5)
    clock.now += 0.5
    assert b.state is HALF_OPEN
    assert b.retry_in() == 0.0


def test_half_open_lets_a_few_probes_through_and_closes_on_their_success() -> None:
    b, clock = breaker(half_open_probes=2)
    fail(b, 3)
    clock.now += 10
    assert [b.allow(), b.allow(), b.allow()] == [True, True, False]
    b.record_success()
    assert b.state is HALF_OPEN
    assert b.allow() is False  # one probe out, one succeeded: no third
    b.record_success()
    assert b.state is CLOSED
    assert b.allow() is True


def test_a_neutral_outcome_in_half_open_gives_the_probe_back() -> None:
    b, clock = breaker(half_open_probes=1)
    fail(b, 3)
    clock.now += 10
    assert b.allow() is True
    assert b.allow() is False
    b.record_neutral()
    assert b.state is HALF_OPEN
    assert b.allow() is True


def test_open_period_doubles_on_each_trip_up_to_the_cap() -> None:
    b, clock = breaker(open_seconds=10.0, max_open_seconds=35.0)
    fail(b, 3)
    periods = []
    for _ in range(4):
        periods.append(b.retry_in())
        clock.now += b.retry_in()
        assert b.allow()  # a probe...
        b.record_failure()  # ...that fails: open again, for longer
        assert b.state is OPEN
    periods.append(b.retry_in())
    assert periods == [10.0, 20.0, 35.0, 35.0, 35.0]
    assert b.total_trips == 5


def test_recovery_resets_the_open_period() -> None:
    b, clock = breaker(open_seconds=10.0, half_open_probes=1)
    fail(b, 3)
    clock.now += 10
    b.allow()
    b.record_failure()
    assert b.retry_in() == 20.0
    clock.now += 20
    b.allow()
    b.record_success()
    assert b.state is CLOSED
    fail(b, 3)
    assert b.retry_in() == 10.0


def test_neutral_outcomes_neither_open_nor_break_a_run() -> None:
    b, _ = breaker()
    fail(b, 2)
    for _ in range(20):
        b.record_neutral()
    assert b.state is CLOSED
    fail(b, 1)
    assert b.state is OPEN


def test_failures_reported_while_open_are_ignored() -> None:
    b, clock = breaker()
    fail(b, 3)
    b.record_failure()  # a request sent before the trip, failing late
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
    config = {"failure_threshold": 3, "open_seconds": 10.0, "max_open_seconds": 40.0}
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
                breaker={"failure_threshold": 3},
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
