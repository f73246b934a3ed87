"""The concurrency limit: how many requests may be in flight, adapted to the server (AIMD).

A pure state machine with an injected clock, fed by the scheduler with the outcome of each
attempt. Additive increase while answers come back sound (``increase / limit`` per answer,
about ``increase`` per round trip; doubling per round trip in slow start, below
``ssthresh``), multiplicative decrease when the server says it is full: the limit drops to
``backoff`` times what was really in flight, once per round of requests, and never stays
above what was in flight when any overload answer came back. So a burst of rejections from a
server that holds 16 brings a limit of 64 down to about 16 at once, not over 48 cuts, and the
limit then saws gently just below the server's capacity. It never leaves
[``min_limit``, ``ceiling``].
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .config import Limits

#: Weight of a new sample in the moving average of sound answers' latency.
LATENCY_WEIGHT = 0.1
#: An error answered in less than this share of the usual latency was refused at the door:
#: the server did no work on it, so it said "full", not "broken".
FAST_SHARE = 0.5


class ConcurrencyLimiter:
    """The current limit (:attr:`slots`), told about each attempt that ended."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic):
        self.limits = limits or Limits()
        self._clock = clock
        # A fixed limit is one that sits at its ceiling for good.
        self._ceiling = self.limits.ceiling if self.limits.adaptive else 0
        self._limit = float(self.limits.start)
        self._ssthresh = float(self.limits.ceiling)
        self._last_cut = float("-inf")
        self._peak = self._limit
        self.latency = 0.0  # moving average of sound answers, seconds (0: none seen yet)
        self.slots = int(self._limit)
        self.lowest = self.slots
        self.cuts = 0

    @property
    def limit(self) -> float:
        """The limit with its fraction (``slots`` is what the scheduler grants)."""
        return self._limit

    def is_fast(self, elapsed: float) -> bool:
        """True when an answer took far less than sound answers do (False before any was seen:
        nothing to compare with)."""
        return elapsed < self.latency * FAST_SHARE

    def on_success(self, in_flight: int, elapsed: float) -> None:
        """A sound answer after ``elapsed`` seconds, with ``in_flight`` others still out."""
        average = self.latency
        self.latency = elapsed if average == 0.0 else average + (elapsed - average) * LATENCY_WEIGHT
        if self.slots >= self._ceiling or (in_flight + 1) * 2 < self._limit:
            return  # at the top, or the limit is not what holds us back
        if self._limit < self._ssthresh:
            self._set(self._limit + 1.0)
        else:
            self._set(self._limit + self.limits.increase / self._limit)
        self._peak = max(self._peak, self._limit)

    def on_overload(self, in_flight: int, sent_at: float) -> None:
        """The server said it is full; ``in_flight`` others are still out, sent at ``sent_at``."""
        if not self.limits.adaptive:
            return
        held = float(max(in_flight, self.limits.min_limit))
        if sent_at > self._last_cut:
            # The first refusal of a round: back off below what the server really held.
            self._set(min(self._limit, held) * self.limits.backoff)
            self._ssthresh = self._limit
            self._last_cut = self._clock()
            self.cuts += 1
        elif held < self._limit:
            # More refusals of the same round: never stay above what the server still holds.
            self._set(held)
            self._ssthresh = min(self._ssthresh, self._limit)

    def restart(self) -> None:
        """The server was down: start again from the bottom, slow start up to where we were."""
        if not self.limits.adaptive:
            return
        self._ssthresh = max(2.0, self._peak * self.limits.backoff)
        self._set(float(self.limits.min_limit))
        self._last_cut = self._clock()

    def _set(self, limit: float) -> None:
        self._limit = min(float(self.limits.ceiling), max(float(self.limits.min_limit), limit))
        self.slots = int(self._limit)
        self.lowest = min(self.lowest, self.slots)
