"""Client configuration: defaults, validation, and where each setting comes from.

:class:`ClientConfig` is composed of finished values: a :class:`~llvm_batch.retry.RetryPolicy`,
:class:`Limits` (concurrency, queue, rate), a :class:`BreakerConfig` and a timeout. Each value
checks itself once, in its own ``__post_init__``. :func:`resolve_config` is the one place
where keywords, ``metadata`` and the ``LLVM_*`` environment become a ClientConfig; per
setting, the explicit argument wins, then ``metadata``, then the environment, then the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, TypedDict

from .compat import Unpack
from .retry import RetryPolicy

DEFAULT_BASE_URL = "http://localhost:8000"
#: The largest answer read; a bigger one fails its request (ResponseTooLargeError), unread.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_REQUESTS = 10
#: ``--concurrency auto``: the ceiling; and the limit an adaptive one starts from.
AUTO = "auto"
DEFAULT_AUTO_CEILING = 256
DEFAULT_AUTO_INITIAL = 8
#: How long a batch (file or DataFrame) waits out a server that is down before it stops as
#: incomplete, resumable.
DEFAULT_MAX_OUTAGE = 600.0
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
    At most ``queue_size`` requests wait for a slot; ``max_rps`` spaces attempts in time.
    """

    ceiling: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    adaptive: bool = True
    initial: int | None = None
    min_limit: int = 1
    backoff: float = 0.95
    increase: float = 0.5
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_rps: float | None = None

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
        _require(
            isinstance(self.queue_size, int) and self.queue_size >= 1,
            "queue_size must be an integer of at least 1, e.g. 100",
        )
        _require(
            self.max_rps is None or self.max_rps > 0,
            "max_rps must be a positive number of requests per second, or None",
        )

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
        auto = Limits.parse(AUTO)
        if replace(self, queue_size=auto.queue_size, max_rps=auto.max_rps) == auto:
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
    """Finished client settings, composed of value objects; build it with :func:`resolve_config`.

    ``retry`` decides retries and backoff, ``limits`` admission (concurrency, queue, rate),
    ``breaker`` (None: no breaker) when to stop sending, ``timeout`` (None: none) bounds each
    attempt.
    """

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    default_model: str | None = None
    protocol: str = DEFAULT_PROTOCOL
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Limits = field(default_factory=Limits)
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    timeout: float | None = DEFAULT_TIMEOUT
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    debug: bool = False

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
            self.timeout is None or self.timeout > 0,
            "timeout must be a positive number of seconds, or None for no timeout",
        )

    @property
    def api_root(self) -> str:
        """The base URL without a trailing slash."""
        return self.base_url.rstrip("/")

    def model(self, model_id: str | None, hint: str = "") -> str:
        """``model_id``, else the default model; a ValueError saying how to give one.

        ``hint`` names the face's own way (``"pass --model"``); the default names the
        client's.
        """
        model = model_id or self.default_model
        if not model:
            how = hint or (
                "pass a model id, or set default_model= (or metadata['llvm_default_model']"
                f" or the {ENV_DEFAULT_MODEL} variable)"
            )
            raise ValueError(f"no model given: {how}")
        return model


class ClientSettings(TypedDict, total=False):
    """The client's tuning keywords, as every face takes them (``AsyncLLVMClient``,
    ``LLVMClient``, ``df.llvm``, ``ddf.llvm``, :func:`resolve_config`). Left out or None:
    the default (``timeout=None``: no timeout)."""

    max_concurrent_requests: Limits | int | str | None
    max_retries: int | None
    retry_delay: float | None
    max_retry_delay: float | None
    retry_jitter: bool | None
    queue_size: int | None
    timeout: float | None
    max_rps: float | None
    max_response_bytes: int | None
    debug: bool | None
    breaker: BreakerConfig | Mapping[str, Any] | bool | None
    protocol: str | None


#: The names of :class:`ClientSettings`, and of the connection keywords beside them.
SETTING_NAMES = frozenset(ClientSettings.__annotations__)
CONNECTION_NAMES = frozenset({"base_url", "api_key", "default_model", "metadata"})


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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


#: The client's retry keywords, and the :class:`RetryPolicy` fields they set.
_RETRY_NAMES = {
    "max_retries": "max_retries",
    "retry_delay": "delay",
    "max_retry_delay": "max_delay",
    "retry_jitter": "jitter",
}


def _breaker_config(
    breaker: BreakerConfig | Mapping[str, Any] | bool | None,
) -> BreakerConfig | None:
    if breaker is True:
        return BreakerConfig()
    if breaker is False or breaker is None:
        return None
    if isinstance(breaker, BreakerConfig):
        return breaker
    wrong = set(breaker) - set(BreakerConfig.__dataclass_fields__)
    if wrong:
        raise TypeError(
            f"unknown breaker option(s): {', '.join(sorted(wrong))}; "
            f"known: {', '.join(BreakerConfig.__dataclass_fields__)}"
        )
    return BreakerConfig(**dict(breaker))


def resolve_protocol(
    given: str | None,
    metadata: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The protocol in use: ``given``, else ``metadata``, else ``LLVM_PROTOCOL``, else llvm;
    a bad one says where it came from."""
    meta = metadata or {}
    env = os.environ if environ is None else environ
    sources = (
        (given, ""),
        (meta.get("llvm_protocol"), "metadata"),
        (env.get(ENV_PROTOCOL), ENV_PROTOCOL),
    )
    for value, source in sources:
        if value is not None and value != "":
            try:
                return parse_protocol(value)
            except ValueError as exc:
                raise ValueError(f"{exc} (from {source})" if source else str(exc)) from None
    return DEFAULT_PROTOCOL


def resolve_config(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    default_model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Unpack[ClientSettings],
) -> ClientConfig:
    """Build a :class:`ClientConfig` from arguments, ``metadata``, the environment and defaults.

    The one place where settings are resolved: every layer below takes the finished value.
    ``breaker`` takes a :class:`BreakerConfig`, a mapping of its fields, True (or left out)
    for the defaults, or False/None to disable the breaker. ``max_concurrent_requests`` takes
    a ceiling, ``"auto"`` or a :class:`Limits`.
    """
    unknown = set(settings) - SETTING_NAMES
    if unknown:
        raise TypeError(f"unknown client option(s): {', '.join(sorted(unknown))}")
    meta = metadata or {}
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
    retry = RetryPolicy(**{name: given[key] for key, name in _RETRY_NAMES.items() if key in given})
    limits = replace(
        Limits.parse(given.get("max_concurrent_requests")),
        **{k: given[k] for k in ("queue_size", "max_rps") if k in given},
    )
    return ClientConfig(
        base_url=_first(base_url, meta.get("llvm_base_url"), env.get(ENV_BASE_URL))
        or DEFAULT_BASE_URL,
        api_key=_first(api_key, meta.get("llvm_api_key"), env.get(ENV_API_KEY)),
        default_model=_first(
            default_model, meta.get("llvm_default_model"), env.get(ENV_DEFAULT_MODEL)
        ),
        protocol=resolve_protocol(settings.get("protocol"), meta, env),
        retry=retry,
        limits=limits,
        breaker=_breaker_config(settings.get("breaker", True)),
        timeout=settings["timeout"] if "timeout" in settings else DEFAULT_TIMEOUT,
        max_response_bytes=given.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES),
        debug=given.get("debug", False),
    )
