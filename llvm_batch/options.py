"""Client configuration: defaults, validation, and where each setting comes from.

Precedence, per setting: explicit argument, then the ``metadata`` mapping, then the
``LLVM_*`` environment, then the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

DEFAULT_BASE_URL = "http://localhost:8000"
#: The largest answer read; a bigger one fails its request (ResponseTooLargeError), unread.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_REQUESTS = 10
#: ``--concurrency auto``: the ceiling; and the limit an adaptive one starts from.
AUTO = "auto"
DEFAULT_AUTO_CEILING = 256
DEFAULT_AUTO_INITIAL = 8
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_RETRY_DELAY = 60.0
#: How long a batch (file or DataFrame) waits out a server that is down before it stops as
#: incomplete, resumable.
DEFAULT_MAX_OUTAGE = 600.0
#: The largest ``retry_delay`` taken, in seconds: a larger one is almost surely milliseconds
#: (the seed's unit), which would make the first 503 wait a quarter of an hour.
MAX_RETRY_DELAY_S = 60.0
DEFAULT_QUEUE_SIZE = 100
DEFAULT_TIMEOUT = 60.0

ENV_API_KEY = "LLVM_API_KEY"
ENV_BASE_URL = "LLVM_BASE_URL"
ENV_DEFAULT_MODEL = "LLVM_DEFAULT_MODEL"
ENV_PROTOCOL = "LLVM_PROTOCOL"

DEFAULT_PROTOCOL = "llvm"
#: Wire protocols by name (:mod:`llvm_batch.protocol`); ``openai-completions`` is ``openai``
#: sending plain prompts to ``/completions`` instead of as one chat turn.
PROTOCOL_NAMES = ("llvm", "openai", "openai-completions")


class Priority(IntEnum):
    """Request priority: HIGH runs before NORMAL before LOW."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """Accept a Priority, its name (any case) or its value."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(f"priority must be one of high, normal, low; got {value!r}")


@dataclass(frozen=True)
class Limits:
    """How many requests may be in flight: a ceiling, and whether the limit adapts below it.

    Adaptive (the default), the limit starts at ``initial`` (default: 8, or the ceiling if
    lower), doubles per round trip up to the ceiling, then follows the server: cut by
    ``backoff`` when the server says it is full (a 503 at once, a 429, a timeout), grown by
    ``increase / limit`` per sound answer, never above ``ceiling`` nor below ``min_limit``.
    ``Limits.parse("auto")`` picks the ceiling and lets the limit find the server's capacity.
    """

    ceiling: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    adaptive: bool = True
    initial: int | None = None
    min_limit: int = 1
    backoff: float = 0.95
    increase: float = 0.5

    def __post_init__(self) -> None:
        _require(
            isinstance(self.ceiling, int) and self.ceiling >= 1,
            "max_concurrent_requests must be an integer of at least 1, e.g. 10, or 'auto'",
        )
        _require(
            isinstance(self.min_limit, int) and 1 <= self.min_limit <= self.ceiling,
            "min_limit must be an integer between 1 and the ceiling",
        )
        _require(
            self.initial is None or self.min_limit <= self.initial <= self.ceiling,
            "initial must lie between min_limit and the ceiling",
        )
        _require(0.0 < self.backoff < 1.0, "backoff must be in (0, 1), e.g. 0.9")
        _require(self.increase > 0, "increase must be positive, e.g. 0.5")

    @property
    def start(self) -> int:
        """The limit before any answer came back: adaptive, it slow-starts from a few (the
        first round of answers also tells what a sound answer takes, so that a refusal at the
        door can be told from a failure)."""
        if self.initial is not None:
            return self.initial
        return min(self.ceiling, DEFAULT_AUTO_INITIAL) if self.adaptive else self.ceiling

    @classmethod
    def parse(cls, value: Limits | int | str | None) -> Limits:
        """A Limits from itself, a ceiling (int or digits) or ``"auto"``; None is the default."""
        if value is None:
            return cls()
        if isinstance(value, Limits):
            return value
        if isinstance(value, str):
            text = value.strip().lower()
            if text == AUTO:
                return cls(ceiling=DEFAULT_AUTO_CEILING, initial=DEFAULT_AUTO_INITIAL)
            if text.isdigit():
                return cls(ceiling=int(text))
        elif isinstance(value, int) and not isinstance(value, bool):
            return cls(ceiling=value)
        raise ValueError(
            "max_concurrent_requests must be an integer of at least 1, e.g. 10, or 'auto'; "
            f"got {value!r}"
        )

    def describe(self) -> str:
        """``auto`` or the ceiling, as a user would write it."""
        if self == Limits.parse(AUTO):
            return AUTO
        return str(self.ceiling)


@dataclass(frozen=True)
class BreakerConfig:
    """When the circuit breaker opens, how long it stays open and how traffic comes back.

    It opens when at least ``failure_rate`` of the calls of the last ``window_seconds``
    failed, once that window holds ``min_calls`` calls: a burst that high concurrency makes
    in milliseconds is not an outage. Open, it fails fast for ``open_seconds``; then it lets
    traffic back in with a ramp (1, 2, 4, ... in flight) and closes after
    ``half_open_successes`` sound answers. A failed probe reopens it for twice as long, up to
    ``max_open_seconds`` (None: four times ``open_seconds``); a server that stays healthy
    for a window brings it back down.
    """

    failure_rate: float = 0.5
    min_calls: int = 100
    window_seconds: float = 2.0
    open_seconds: float = 0.25
    max_open_seconds: float | None = None
    half_open_successes: int = 4

    def __post_init__(self) -> None:
        _require(0.0 < self.failure_rate <= 1.0, "failure_rate must be in (0, 1], e.g. 0.5")
        _require(
            isinstance(self.min_calls, int) and self.min_calls >= 1,
            "min_calls must be an integer of at least 1, e.g. 100",
        )
        _require(self.window_seconds > 0, "window_seconds must be positive, e.g. 2.0")
        _require(self.open_seconds > 0, "open_seconds must be positive, e.g. 0.5")
        _require(
            self.max_open_seconds is None or self.max_open_seconds >= self.open_seconds,
            "max_open_seconds must be at least open_seconds",
        )
        _require(self.half_open_successes >= 1, "half_open_successes must be at least 1")

    @property
    def longest_open(self) -> float:
        """The cap of the open period."""
        if self.max_open_seconds is None:
            return self.open_seconds * 4
        return self.max_open_seconds


@dataclass(frozen=True)
class ClientConfig:
    """Validated client settings; build it with :func:`resolve_config`."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    default_model: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY
    retry_jitter: bool = True
    queue_size: int = DEFAULT_QUEUE_SIZE
    timeout: float | None = DEFAULT_TIMEOUT
    max_rps: float | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    debug: bool = False
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    protocol: str = DEFAULT_PROTOCOL

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", parse_protocol(self.protocol))
        scheme = self.base_url.split("://", 1)[0].lower() if "://" in self.base_url else ""
        _require(
            scheme in ("http", "https") and len(self.base_url) > len(scheme) + 3,
            f"base_url must be an http:// or https:// URL such as {DEFAULT_BASE_URL!r}; "
            f"got {_shown_url(self.base_url)!r}",
        )
        _require(
            isinstance(self.max_response_bytes, int) and self.max_response_bytes >= 1,
            "max_response_bytes must be a positive integer, e.g. 67108864 (64 MiB)",
        )
        _require(
            isinstance(self.max_retries, int) and self.max_retries >= 0,
            "max_retries must be an integer of 0 or more (3 means up to 4 attempts)",
        )
        check_retry_delay(self.retry_delay)
        _require(
            self.max_retry_delay >= self.retry_delay,
            "max_retry_delay must be at least retry_delay",
        )
        _require(
            isinstance(self.queue_size, int) and self.queue_size >= 1,
            "queue_size must be an integer of at least 1, e.g. 100",
        )
        _require(
            self.timeout is None or self.timeout > 0,
            "timeout must be a positive number of seconds, or None for no timeout",
        )
        _require(
            self.max_rps is None or self.max_rps > 0,
            "max_rps must be a positive number of requests per second, or None",
        )

    @property
    def max_concurrent_requests(self) -> int:
        """The most requests ever in flight at once (the limiter's ceiling)."""
        return self.limits.ceiling

    @property
    def api_root(self) -> str:
        """The base URL without a trailing slash."""
        return self.base_url.rstrip("/")


def _shown_url(url: str) -> str:
    """``url`` as it may be printed: no userinfo (user:password@), no query (?token=...)."""
    scheme, sep, rest = url.rpartition("://")
    rest = rest.rsplit("@", 1)[-1].split("?", 1)[0]
    return f"{scheme}{sep}***@{rest}" if "@" in url.split("?", 1)[0] else scheme + sep + rest


def parse_protocol(name: str) -> str:
    """A protocol name in canonical form; a ValueError that lists the choices."""
    canonical = str(name).strip().lower()
    _require(
        canonical in PROTOCOL_NAMES,
        f"protocol must be one of {', '.join(PROTOCOL_NAMES)}; got {name!r}",
    )
    return canonical


def check_retry_delay(seconds: float) -> None:
    """Refuse a negative ``retry_delay``, and one so large it must be milliseconds."""
    _require(seconds >= 0, "retry_delay must be 0 or more seconds, e.g. 1.0")
    _require(
        seconds <= MAX_RETRY_DELAY_S,
        f"retry_delay is in seconds, and {seconds:g} looks like milliseconds: "
        f"did you mean {seconds / 1000:g} (seconds)? At most {MAX_RETRY_DELAY_S:g} s is taken.",
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def resolve_config(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    default_model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    breaker: BreakerConfig | Mapping[str, Any] | bool | None = True,
    protocol: str | None = None,
    max_concurrent_requests: Limits | int | str | None = None,
    **settings: Any,
) -> ClientConfig:
    """Build a :class:`ClientConfig` from arguments, ``metadata``, the environment and defaults.

    ``breaker`` takes a :class:`BreakerConfig`, a mapping of its fields, True for the defaults
    or False/None to disable the breaker. ``max_concurrent_requests`` takes a ceiling, ``"auto"``
    or a :class:`Limits`. Other keywords are ClientConfig fields; a None value
    means "use the default".
    """
    meta = metadata or {}
    env = os.environ if environ is None else environ
    unknown = set(settings) - (set(ClientConfig.__dataclass_fields__) - {"limits"})
    if unknown:
        raise TypeError(f"unknown client option(s): {', '.join(sorted(unknown))}")
    if breaker is True:
        breaker_config: BreakerConfig | None = BreakerConfig()
    elif breaker is False or breaker is None:
        breaker_config = None
    elif isinstance(breaker, BreakerConfig):
        breaker_config = breaker
    else:
        wrong = set(breaker) - set(BreakerConfig.__dataclass_fields__)
        if wrong:
            raise TypeError(
                f"unknown breaker option(s): {', '.join(sorted(wrong))}; "
                f"known: {', '.join(BreakerConfig.__dataclass_fields__)}"
            )
        breaker_config = BreakerConfig(**dict(breaker))
    given = {name: value for name, value in settings.items() if value is not None}
    if "timeout" in settings and settings["timeout"] is None:
        given["timeout"] = None
    return ClientConfig(
        base_url=_first(base_url, meta.get("llvm_base_url"), env.get(ENV_BASE_URL))
        or DEFAULT_BASE_URL,
        api_key=_first(api_key, meta.get("llvm_api_key"), env.get(ENV_API_KEY)),
        default_model=_first(
            default_model, meta.get("llvm_default_model"), env.get(ENV_DEFAULT_MODEL)
        ),
        breaker=breaker_config,
        protocol=_first(protocol, meta.get("llvm_protocol"), env.get(ENV_PROTOCOL))
        or DEFAULT_PROTOCOL,
        limits=Limits.parse(max_concurrent_requests),
        **given,
    )
