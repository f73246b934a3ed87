"""The concurrency limiter and outcome classification: pure state machines on a fake clock.

A small event simulation plays a server that holds ``capacity`` requests for ``latency``
seconds each and answers 503 at once beyond that, the way vLLM, TGI or Ollama shed load.
"""

from __future__ import annotations

import heapq
import itertools

import pytest

from llvm_batch.attempt import Verdict, classify, next_step
from llvm_batch.config import DEFAULT_AUTO_CEILING, Limits
from llvm_batch.errors import (
    BadRequestError,
    InvalidResponseError,
    LLVMConnectionError,
    LLVMTimeoutError,
    RateLimitError,
    ServerError,
)
from llvm_batch.limiter import ConcurrencyLimiter
from llvm_batch.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(limits: Limits, *, capacity: int, latency: float, seconds: float, warmup: float):
    """Run the limiter against a capacity-limited server; figures after ``warmup`` seconds."""
    clock = Clock()
    limiter = ConcurrencyLimiter(limits, clock)
    events: list[tuple[float, int, bool, float]] = []  # (done at, seq, ok, sent at)
    seq = itertools.count()
    in_flight = serving = 0
    ok = refused = 0
    limits_seen: list[int] = []
    while clock.now < seconds:
        while in_flight < limiter.slots:
            in_flight += 1
            if serving < capacity:
                serving += 1
                heapq.heappush(events, (clock.now + latency, next(seq), True, clock.now))
            else:
                heapq.heappush(events, (clock.now + latency / 40, next(seq), False, clock.now))
        clock.now, _, sound, sent_at = heapq.heappop(events)
        in_flight -= 1
        if sound:
            serving -= 1
            limiter.on_success(in_flight, clock.now - sent_at)
        else:
            assert limiter.is_fast(clock.now - sent_at) or limiter.latency == 0.0
            limiter.on_overload(in_flight, sent_at)
        if clock.now >= warmup:
            ok += sound
            refused += not sound
            limits_seen.append(limiter.slots)
    return limiter, ok, refused, limits_seen


def test_the_limit_converges_just_below_a_capacity_limited_server() -> None:
    limiter, ok, refused, seen = simulate(
        Limits(ceiling=64), capacity=16, latency=0.02, seconds=20.0, warmup=5.0
    )
    rate = ok / 15.0
    assert rate >= 0.8 * 16 / 0.02  # at least 80% of what the server can do
    assert refused / (ok + refused) <= 0.02
    assert 12 <= min(seen) and max(seen) <= 17


def test_auto_finds_the_capacity_without_being_told() -> None:
    limiter, ok, refused, seen = simulate(
        Limits.parse("auto"), capacity=16, latency=0.02, seconds=20.0, warmup=5.0
    )
    assert limiter.limits.ceiling == DEFAULT_AUTO_CEILING
    assert ok / 15.0 >= 0.8 * 16 / 0.02
    assert refused / (ok + refused) <= 0.02
    assert max(seen) <= 17


def test_a_burst_of_refusals_brings_the_limit_down_at_once_in_one_cut() -> None:
    """64 in flight, the server holds 16: 48 quick 503s take the limit to ~16, not to 1."""
    clock = Clock()
    limiter = ConcurrencyLimiter(Limits(ceiling=64, initial=64), clock)
    sent_at = clock.now
    clock.now = 0.001
    for still_out in range(63, 15, -1):  # the 48 refusals come back one after another
        limiter.on_overload(still_out, sent_at)
    assert limiter.cuts == 1
    assert limiter.slots == 16
    assert limiter.lowest >= 14


def test_sound_answers_grow_the_limit_additively_up_to_the_ceiling() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(Limits(ceiling=20, initial=10), clock)
    limiter.on_overload(10, sent_at=1.0)  # leave slow start: 10 -> 9
    assert limiter.slots == 9
    for _ in range(20):  # about two rounds of sound answers at full use
        limiter.on_success(limiter.slots - 1, 0.02)
    assert limiter.slots == 10  # + increase (0.5) per round
    for _ in range(10_000):
        limiter.on_success(limiter.slots - 1, 0.02)
    assert limiter.slots == 20


def test_an_idle_limit_does_not_grow() -> None:
    """Sound answers with few requests out say nothing about more; the limit stays put."""
    limiter = ConcurrencyLimiter(Limits(ceiling=64, initial=32), Clock())
    limiter.on_overload(31, sent_at=1.0)
    before = limiter.limit
    for _ in range(1000):
        limiter.on_success(2, 0.02)
    assert limiter.limit == before


def test_the_limit_never_drops_below_the_floor() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(Limits(ceiling=8), clock)
    for step in range(100):
        clock.now = step
        limiter.on_overload(0, sent_at=step)
    assert limiter.slots == 1
    assert limiter.lowest == 1


def test_after_an_outage_the_limit_ramps_back_in_slow_start() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(Limits(ceiling=32, initial=32), clock)
    limiter.restart()
    assert limiter.slots == 1
    rounds = 0
    while limiter.slots < 28:
        for _ in range(limiter.slots):  # a round of sound answers at full use
            limiter.on_success(limiter.slots - 1, 0.02)
        rounds += 1
    assert rounds <= 6  # doubling per round, not +1 per round


def test_a_fixed_limit_does_not_move() -> None:
    limiter = ConcurrencyLimiter(Limits(ceiling=5, adaptive=False), Clock())
    limiter.on_overload(4, sent_at=1.0)
    limiter.restart()
    assert limiter.slots == 5


@pytest.mark.parametrize(
    ("value", "ceiling", "start"),
    [(7, 7, 7), ("12", 12, 8), ("auto", DEFAULT_AUTO_CEILING, 8), (" AUTO ", 256, 8)],
)
def test_limits_parse_a_number_or_auto(value, ceiling, start) -> None:
    limits = Limits.parse(value)
    assert (limits.ceiling, limits.start, limits.adaptive) == (ceiling, start, True)


@pytest.mark.parametrize("value", [0, -3, "many", "1.5", True])
def test_limits_refuse_anything_else_saying_what_to_use(value) -> None:
    with pytest.raises(ValueError, match="at least 1, e.g. 10, or 'auto'"):
        Limits.parse(value)


# -- classification, in one place ----------------------------------------------------------


def status(cls, code: int, retry_after: float | None = None):
    return cls("x", status=code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "fast", "verdict"),
    [
        (None, False, Verdict.SUCCESS),
        (status(ServerError, 503), True, Verdict.OVERLOAD),  # refused at the door: full
        (status(ServerError, 503), False, Verdict.FAILURE),  # after doing the work: broken
        (status(ServerError, 500), True, Verdict.FAILURE),
        (status(ServerError, 501), False, Verdict.FAILURE),
        (LLVMTimeoutError("x"), False, Verdict.OVERLOAD),
        (status(RateLimitError, 429), True, Verdict.THROTTLED),
        (status(RateLimitError, 429, retry_after=0.5), True, Verdict.THROTTLED),
        (status(RateLimitError, 429, retry_after=100000), True, Verdict.NEUTRAL),
        (LLVMConnectionError("x"), True, Verdict.FAILURE),
        (InvalidResponseError("x"), False, Verdict.FAILURE),
        (status(BadRequestError, 400), True, Verdict.NEUTRAL),
    ],
)
def test_each_outcome_is_judged_once(error, fast, verdict) -> None:
    judged = classify(error, fast=fast)
    assert judged is verdict
    assert judged.full == (verdict in (Verdict.OVERLOAD, Verdict.THROTTLED))
    assert judged.failed == (verdict in (Verdict.OVERLOAD, Verdict.FAILURE))


def test_the_next_step_bounds_every_wait_even_a_huge_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, delay=1.0, max_delay=30.0, jitter=False)
    step = next_step(policy, 1, status(RateLimitError, 429, 100000), retry=True, random=0.0)
    assert step.wait == 30.0
    assert not step.done


def test_the_next_step_is_done_on_success_a_final_error_or_retries_off() -> None:
    policy = RetryPolicy(max_retries=1, delay=1.0, jitter=False)
    assert next_step(policy, 1, None, retry=True, random=0.0).done
    assert next_step(policy, 2, status(ServerError, 503), retry=True, random=0.0).done
    assert next_step(policy, 1, status(ServerError, 503), retry=False, random=0.0).done
    assert next_step(policy, 1, status(BadRequestError, 400), retry=True, random=0.0).done
    step = next_step(policy, 1, status(ServerError, 503), retry=True, random=0.0)
    assert step.wait == 1.0 and step.reason == "retry 1 of 1 in 1.00 s"
