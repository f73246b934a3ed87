"""The retry policy: whether to try again and how long to wait first. Pure, no I/O.

The loop around it (in the client) is: attempt; on failure ask :meth:`RetryPolicy.decide`;
sleep the returned delay without holding a concurrency slot; attempt again.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from .errors import LLVMError


@dataclass(frozen=True)
class RetryDecision:
    """``retry`` is False when the error is final; ``delay`` is the wait in seconds otherwise."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ceilings ``delay * 2**n`` capped at ``max_delay``.

    With ``jitter`` each wait is drawn uniformly from the upper half of its ceiling, so that
    many clients retrying together spread out without ever retrying at once. A Retry-After
    from the server is a floor on the wait.
    """

    max_retries: int = 3
    delay: float = 1.0
    max_delay: float = 60.0
    jitter: bool = True

    def ceiling(self, retry_number: int) -> float:
        """The longest wait before retry number ``retry_number`` (1-based)."""
        return float(min(self.max_delay, self.delay * (2 ** (retry_number - 1))))

    def backoff(self, retry_number: int, random: Callable[[], float] = _random.random) -> float:
        """The wait before retry number ``retry_number`` (1-based), jittered if enabled."""
        top = self.ceiling(retry_number)
        if not self.jitter:
            return top
        return top / 2 + random() * top / 2

    def decide(
        self,
        attempts: int,
        error: BaseException,
        random: Callable[[], float] = _random.random,
    ) -> RetryDecision:
        """Whether to retry after ``attempts`` attempts ended in ``error``, and the wait first."""
        if not isinstance(error, LLVMError) or not error.retryable:
            return RetryDecision(False, reason="not retryable")
        if attempts > self.max_retries:
            return RetryDecision(False, reason=f"gave up after {attempts} attempts")
        wait = self.backoff(attempts, random)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return RetryDecision(True, wait, reason=f"retry {attempts} of {self.max_retries}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None.

    ``now`` is the current wall-clock time (``time.time()``), used for the date form.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
