"""The reference server's fault knobs: which inference request meets which fault.

Faults (503, 429 + Retry-After, connection resets, malformed JSON) hit inference requests
only, decided by a seeded hash of the request and the number of times the same request was
seen, so a run is reproducible whatever the ordering. Two faults reproduce real servers under
load and down: ``capacity`` (more inferences in flight than that are answered 503 at once, as
vLLM, TGI or Ollama shed load) and an outage window (``outage_at`` seconds after the faults
were set, every inference is answered 503 at once for ``outage_s`` seconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Faults:
    """What goes wrong, per inference request. Rates are fractions in [0, 1]."""

    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    reset_rate: float = 0.0
    bad_json_rate: float = 0.0
    fail_first: int = 0
    seed: int = 0
    capacity: int = 0
    outage_at: float | None = None
    outage_s: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.rate_limit_rate, self.reset_rate, self.bad_json_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise ValueError("fault rates must each be in [0, 1] and add up to at most 1")
        if self.latency < 0 or self.retry_after < 0 or self.fail_first < 0:
            raise ValueError("latency, retry_after and fail_first must not be negative")
        if not isinstance(self.capacity, int) or self.capacity < 0:
            raise ValueError("capacity must be a whole number of requests (0: unlimited)")
        if (self.outage_at is not None and self.outage_at < 0) or self.outage_s < 0:
            raise ValueError("outage_at and outage_s must not be negative")

    def in_outage(self, since_set: float) -> bool:
        """True ``since_set`` seconds after these faults were set, if that is in the outage."""
        start = self.outage_at
        return start is not None and start <= since_set < start + self.outage_s

    def pick(self, key: str, seen: int) -> str | None:
        """The fault for the ``seen``-th sighting of request ``key``, or None."""
        if seen < self.fail_first:
            return "error"
        roll = random.Random(f"{self.seed}:{key}:{seen}").random()
        for name, rate in (
            ("error", self.error_rate),
            ("rate_limit", self.rate_limit_rate),
            ("reset", self.reset_rate),
            ("bad_json", self.bad_json_rate),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None


FAULT_FIELDS = tuple(f.name for f in fields(Faults))
