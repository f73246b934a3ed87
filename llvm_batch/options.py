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
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_MAX_RETRY_DELAY = 60.0
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
class BreakerConfig:
    """When the circuit breaker opens, how long it stays open and how it probes.

    It opens after ``failure_threshold`` consecutive failures, or when at least
    ``failure_rate`` of the last ``window`` outcomes failed (once ``min_calls`` were seen).
    Open periods start at ``open_seconds`` and double on each trip without a recovery,
    up to ``max_open_seconds``; ``half_open_probes`` successful probes close it again.
    """

    failure_threshold: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    open_seconds: float = 5.0
    max_open_seconds: float = 60.0
    half_open_probes: int = 2

    def __post_init__(self) -> None:
        _require(self.failure_threshold >= 1, "failure_threshold must be at least 1")
        _require(0.0 < self.failure_rate <= 1.0, "failure_rate must be in (0, 1], e.g. 0.5")
        _require(self.window >= 1, "window must be at least 1 outcome")
        _require(1 <= self.min_calls <= self.window, "min_calls must be between 1 and window")
        _require(self.open_seconds > 0, "open_seconds must be positive, e.g. 5.0")
        _require(
            self.max_open_seconds >= self.open_seconds,
            "max_open_seconds must be at least open_seconds",
        )
        _require(self.half_open_probes >= 1, "half_open_probes must be at least 1")


@dataclass(frozen=True)
class ClientConfig:
    """Validated client settings; build it with :func:`resolve_config`."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    default_model: str | None = None
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
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
            isinstance(self.max_concurrent_requests, int) and self.max_concurrent_requests >= 1,
            "max_concurrent_requests must be an integer of at least 1, e.g. 10",
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
    **settings: Any,
) -> ClientConfig:
    """Build a :class:`ClientConfig` from arguments, ``metadata``, the environment and defaults.

    ``breaker`` takes a :class:`BreakerConfig`, a mapping of its fields, True for the defaults
    or False/None to disable the breaker. Other keywords are ClientConfig fields; a None value
    means "use the default".
    """
    meta = metadata or {}
    env = os.environ if environ is None else environ
    unknown = set(settings) - set(ClientConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown client option(s): {', '.join(sorted(unknown))}")
    if breaker is True:
        breaker_config: BreakerConfig | None = BreakerConfig()
    elif breaker is False or breaker is None:
        breaker_config = None
    elif isinstance(breaker, BreakerConfig):
        breaker_config = breaker
    else:
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
        **given,
    )
