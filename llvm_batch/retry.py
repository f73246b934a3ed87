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

DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_RETRY_DELAY = 60.0
#: The largest ``retry_delay`` taken, in seconds: a larger one is almost surely milliseconds
#: (the seed's unit), which would make the first 503 wait a quarter of an hour.
MAX_RETRY_DELAY_S = 60.0


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

    max_retries: int = DEFAULT_MAX_RETRIES
    delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = DEFAULT_MAX_RETRY_DELAY
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.max_retries, int) and self.max_retries >= 0):
            raise ValueError(
                "max_retries must be an integer of 0 or more (3 means up to 4 attempts)"
            )
        check_retry_delay(self.delay)
        if not self.max_delay >= self.delay:
            raise ValueError("max_retry_delay must be at least retry_delay")

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


def check_retry_delay(seconds: float) -> None:
    """Refuse a negative ``retry_delay``, and one so large it must be milliseconds."""
    if not seconds >= 0:
        raise ValueError("retry_delay must be 0 or more seconds, e.g. 1.0")
    if seconds > MAX_RETRY_DELAY_S:
        raise ValueError(
            f"retry_delay is in seconds, and {seconds:g} looks like milliseconds: "
            f"did you mean {seconds / 1000:g} (seconds)? At most {MAX_RETRY_DELAY_S:g} s is taken."
        )


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
