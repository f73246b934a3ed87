"""The circuit breaker: is the server down? A pure state machine with an injected clock.

closed --(failure rate over a time window, with a minimum of calls)--> open
open --(open period over)--> half_open --(``half_open_successes`` sound answers)--> closed
half_open --(a failure)--> open, for twice as long (up to ``max_open_seconds``)

It is for outages, not for load: a burst of failures that high concurrency makes in a few
milliseconds never reaches the minimum of calls on its own, and a server that answers most
requests keeps it closed (shedding load is the concurrency limiter's business). Half-open lets
traffic back in with a ramp, 1, 2, 4, ... requests in flight, each sound answer doubling it.
The open period grows only while probes keep failing; a server that stays healthy for a whole
window brings it back to ``open_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import Enum

from .attempt import Verdict
from .config import BreakerConfig

#: The window is kept as this many buckets of calls and failures (resilience4j-style).
BUCKETS = 10


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


class CircuitBreaker:
    """Decides whether a request may go out; told the outcome of each one that did."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._bucket_s = self.config.window_seconds / BUCKETS
        # [bucket number, calls, failures], oldest first.
        self._buckets: list[list[int]] = []
        self._bucket_end = float("-inf")  # clock time the newest bucket ends
        self._calls = 0
        self._failures = 0
        self._opened_at = 0.0
        self._open_for = self.config.open_seconds
        self._closed_at = float("-inf")
        self._probes_out = 0
        self._probe_successes = 0
        self.total_trips = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose period is over reads as half-open.

        Reading it changes nothing: the move to half-open happens in :meth:`_advance`, which
        every call that acts on the state makes first.
        """
        if self._state is BreakerState.OPEN and self._clock() >= self.reopens_at:
            return BreakerState.HALF_OPEN
        return self._state

    def _advance(self) -> BreakerState:
        """Enter half-open once the open period is over; the state now."""
        if self._state is BreakerState.OPEN and self._clock() >= self.reopens_at:
            self._state = BreakerState.HALF_OPEN
            self._probes_out = 0
            self._probe_successes = 0
        return self._state

    @property
    def reopens_at(self) -> float:
        """Clock time when an open breaker lets probes through."""
        return self._opened_at + self._open_for

    def retry_in(self) -> float:
        """Seconds until a request may be tried again (0 when it may go now)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self.reopens_at - self._clock())
        return 0.0

    def window(self) -> tuple[int, int]:
        """Calls and failures seen in the current window (closed state only)."""
        self._expire(self._clock())
        return self._calls, self._failures

    def allow(self) -> bool:
        """True if a request may go out now; in half-open, within the ramp."""
        state = self._advance()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes_out >= 2 ** min(self._probe_successes, 16):
            return False
        self._probes_out += 1
        return True

    def record(self, verdict: Verdict) -> bool:
        """Told how an attempt went (see :func:`~llvm_batch.attempt.classify`); True if it
        tripped."""
        if verdict is Verdict.SUCCESS:
            self.record_success()
        elif verdict.failed:
            return self.record_failure()
        else:
            self.record_neutral()
        return False

    def record_success(self) -> None:
        """A request got a sound answer."""
        if self._advance() is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_successes:
                self._close()
        elif self._state is BreakerState.CLOSED:
            self._count(failed=False)

    def record_failure(self) -> bool:
        """A request failed in a way that says the server is in trouble; True if it tripped."""
        if self._advance() is BreakerState.HALF_OPEN:
            self._trip(grow=True)
            return True
        if self._state is BreakerState.OPEN:
            return False  # sent before it opened: already counted in
        self._count(failed=True)
        if self._calls >= self.config.min_calls and (
            self._failures >= self.config.failure_rate * self._calls
        ):
            # Flapping (tripped again soon after closing) keeps growing the open period.
            self._trip(grow=self._clock() - self._closed_at < self.config.window_seconds)
            return True
        return False

    def record_neutral(self) -> None:
        """A request ended in a way that says nothing about server health (429, 4xx)."""
        if self._advance() is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)

    def _count(self, *, failed: bool) -> None:
        now = self._clock()
        buckets = self._buckets
        if now >= self._bucket_end or not buckets:
            number = math.floor(now / self._bucket_s)
            self._bucket_end = (number + 1) * self._bucket_s
            self._expire(now)
            buckets.append([number, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        self._calls += 1
        if failed:
            bucket[2] += 1
            self._failures += 1

    def _expire(self, now: float) -> None:
        oldest = math.floor(now / self._bucket_s) - BUCKETS + 1
        buckets = self._buckets
        while buckets and buckets[0][0] < oldest:
            _, calls, failures = buckets.pop(0)
            self._calls -= calls
            self._failures -= failures

    def _trip(self, *, grow: bool) -> None:
        self.total_trips += 1
        if grow:
            self._open_for = min(self.config.longest_open, self._open_for * 2)
        else:
            self._open_for = self.config.open_seconds
        self._opened_at = self._clock()
        self._state = BreakerState.OPEN
        self._buckets.clear()
        self._calls = self._failures = 0
        self._probes_out = 0
        self._probe_successes = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._closed_at = self._clock()
