"""The circuit breaker: a pure state machine over request outcomes, with an injected clock.

closed --(failure run or failure rate)--> open --(open period over)--> half_open
half_open --(``half_open_probes`` successes)--> closed;  half_open --(any failure)--> open
Each trip without a recovery in between doubles the open period, up to a cap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum

from .options import BreakerConfig


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
        self._outcomes: deque[bool] = deque(maxlen=self.config.window)
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._open_for = 0.0
        self._trips = 0
        self._probes_out = 0
        self._probe_successes = 0
        self.total_trips = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose period is over reads as half-open."""
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

    def allow(self) -> bool:
        """True if a request may go out now; in half-open, reserves one probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes_out + self._probe_successes >= self.config.half_open_probes:
            return False
        self._probes_out += 1
        return True

    def record_success(self) -> None:
        """A request got a sound answer."""
        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._close()
            return
        self._outcomes.append(True)

    def record_failure(self) -> None:
        """A request failed in a way that says the server is in trouble."""
        if self._state is BreakerState.HALF_OPEN:
            self._trip()
            return
        if self._state is BreakerState.OPEN:
            return
        self._consecutive_failures += 1
        self._outcomes.append(False)
        if self._consecutive_failures >= self.config.failure_threshold or self._rate_exceeded():
            self._trip()

    def record_neutral(self) -> None:
        """A request ended in a way that says nothing about server health (429, 4xx)."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)

    def _rate_exceeded(self) -> bool:
        seen = len(self._outcomes)
        if seen < self.config.min_calls:
            return False
        failures = seen - sum(self._outcomes)
        return failures / seen >= self.config.failure_rate

    def _trip(self) -> None:
        self._trips += 1
        self.total_trips += 1
        growth = 2 ** (self._trips - 1)
        self._open_for = min(self.config.max_open_seconds, self.config.open_seconds * growth)
        self._opened_at = self._clock()
        self._state = BreakerState.OPEN
        self._outcomes.clear()
        self._consecutive_failures = 0
        self._probes_out = 0
        self._probe_successes = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._trips = 0
        self._outcomes.clear()
        self._consecutive_failures = 0
