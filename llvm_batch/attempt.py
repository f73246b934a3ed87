"""One attempt's outcome, judged once, and the next step of a call: pure, no I/O.

:func:`classify` is the one place an outcome is sorted into what it tells the concurrency
limiter and the circuit breaker; :func:`next_step` is the call's decision after an attempt
(try again after N seconds, or done with this result), shaped like tenacity's ``iter()``:
the client's loop does the I/O and asks these two what it means.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import CircuitOpenError, LLVMError, LLVMTimeoutError, RateLimitError, ServerError
from .retry import RetryPolicy

#: A Retry-After at least this long is a pause the server asked for, not a "full" signal.
LONG_RETRY_AFTER_S = 1.0


@dataclass
class Outcome:
    """How one call ended: its decoded answer or its error, and what it took.

    ``overloaded`` says the last attempt met a server that was full (see :func:`classify`).
    """

    value: Any = None
    error: LLVMError | None = None
    attempts: int = 0
    retry_wait_s: float = 0.0
    latency_ms: float = 0.0
    http_status: int | None = None
    overloaded: bool = False

    def result(self) -> Any:
        """The answer, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value


class Verdict(str, Enum):
    """What an attempt says about the server: to the limiter (full?), to the breaker (down?)."""

    SUCCESS = "success"  # a sound answer: the limiter may grow, the breaker counts a success
    OVERLOAD = "overload"  # a 503 at once, a timeout: the limiter backs off, the breaker counts
    THROTTLED = "throttled"  # a 429: the limiter backs off; alive, so neutral to the breaker
    FAILURE = "failure"  # a slow 5xx, a reset, a broken body: the breaker counts it
    NEUTRAL = "neutral"  # says nothing about the server's health (4xx, a long-paused 429)

    def __str__(self) -> str:
        return self.value

    @property
    def full(self) -> bool:
        """The server said it holds no more: the concurrency limit backs off."""
        return self in (Verdict.OVERLOAD, Verdict.THROTTLED)

    @property
    def failed(self) -> bool:
        """The server may be down: the breaker counts it as a failure."""
        return self in (Verdict.OVERLOAD, Verdict.FAILURE)


def classify(error: LLVMError | None, *, fast: bool) -> Verdict:
    """Judge one attempt; ``fast`` when its answer came far quicker than sound answers do.

    A 503 refused at the door (fast) and a timeout say "full" (and count toward "down"); a 429
    without a long Retry-After says "full" only. Any other 5xx, a reset or a broken body is a
    failure; other 4xx, and a 429 that names a long pause (the client pauses instead), are
    neutral.
    """
    if error is None:
        return Verdict.SUCCESS
    if isinstance(error, RateLimitError):
        long_pause = error.retry_after is not None and error.retry_after >= LONG_RETRY_AFTER_S
        return Verdict.NEUTRAL if long_pause else Verdict.THROTTLED
    if isinstance(error, LLVMTimeoutError) or (
        isinstance(error, ServerError) and error.status == 503 and fast
    ):
        return Verdict.OVERLOAD
    if isinstance(error, ServerError) or error.retryable:
        # Every 5xx says the server is in trouble, even those not worth retrying (501).
        return Verdict.FAILURE
    return Verdict.NEUTRAL


def refused_for_room(error: LLVMError | None, verdict: Verdict) -> bool:
    """Refused for lack of room (a 503 at once, a 429), not a timeout: a row may be held."""
    return isinstance(error, RateLimitError) or (
        verdict is Verdict.OVERLOAD and isinstance(error, ServerError)
    )


@dataclass(frozen=True)
class Step:
    """After an attempt: ``wait`` seconds then attempt again, or (``wait`` None) done."""

    wait: float | None
    reason: str

    @property
    def done(self) -> bool:
        return self.wait is None


def next_step(
    policy: RetryPolicy,
    attempts: int,
    error: LLVMError | None,
    retry: bool,
    random: float,
    refused: bool = False,
) -> Step:
    """Whether a call whose ``attempts``-th attempt ended in ``error`` goes on, and when.

    ``random`` is a draw in [0, 1) for the jitter. Every wait is bounded by the policy's
    ``max_delay``, a huge Retry-After included. A call ``refused`` at the door by a full server
    (and not told how long to wait) queues again for a slot at once: the concurrency limit,
    just cut, is what paces it.
    """
    if error is None:
        return Step(None, "ok")
    decision = policy.decide(attempts, error, lambda: random)
    if not retry or not decision.retry:
        return Step(None, f"giving up ({error.error_type})")
    if refused and isinstance(error, ServerError) and error.retry_after is None:
        # A 503 at once, not a 429: the limit paces concurrency, not a request rate.
        return Step(0.0, f"{decision.reason} when a slot frees (the server was full)")
    wait = min(decision.delay, policy.max_delay)
    return Step(wait, f"{decision.reason} in {wait:.2f} s")


def circuit_open(
    operation: str, model: str | None, outcome: Outcome, retry_in: float, now: float
) -> CircuitOpenError:
    """The error of a call the breaker refused; ``now`` is the wall-clock time."""
    error = CircuitOpenError(
        "the circuit breaker is open: the server failed most requests of late; failing fast",
        operation=operation,
        model=model,
        attempts=outcome.attempts,
        next_retry_at=now + retry_in,
        retry_after=retry_in,
    )
    # A retry refused by the breaker keeps what its last attempt met, to say why; that retry
    # will not come, so the kept error names none.
    last = outcome.error
    error.__cause__ = last and last.with_attempts(outcome.attempts)
    return error
