"""Options of a batch run: defaults, validation, and which of them shape the output."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import InputError
from ..options import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_DELAY,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    Limits,
    Priority,
)
from .columns import DEFAULT_PREFIX
from .prompts import OPTION_NAMES, PromptSpec

DEFAULT_CONCURRENCY = 16
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_FLUSH_INTERVAL = 2.0
DEFAULT_MAX_OUTAGE = 600.0
DEFAULT_PROGRESS_INTERVAL = 10.0

#: Options that change what ends up in the output; a checkpoint is tied to their values.
SHAPING = (
    "model",
    "prompt_column",
    "template",
    "chat",
    "messages_column",
    "system",
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "params",
    "max_tokens_column",
    "temperature_column",
    "top_k_column",
    "top_p_column",
    "params_column",
    "prefix",
    "retry_errors",
)


@dataclass(frozen=True)
class BatchOptions:
    """Everything ``run_batch`` and ``llvm-batch run`` accept besides input and output."""

    model: str | None = None
    prompt_column: str = "prompt"
    template: str | None = None
    chat: bool = False
    messages_column: str = "messages"
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    params: dict[str, Any] | None = None
    max_tokens_column: str | None = None
    temperature_column: str | None = None
    top_k_column: str | None = None
    top_p_column: str | None = None
    params_column: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    prefix: str = DEFAULT_PREFIX
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int | str = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    timeout: float | None = DEFAULT_TIMEOUT
    max_rps: float | None = None
    breaker: dict[str, Any] | bool = True
    priority: str = "normal"
    max_outage: float = DEFAULT_MAX_OUTAGE
    max_error_rate: float = 0.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    overwrite: bool = False
    retry_errors: bool = False
    dry_run: bool = False
    local_server: bool = False
    progress: bool | None = None
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    quiet: bool = False
    debug: bool = False
    summary_json: str | None = None

    def __post_init__(self) -> None:
        checks = (
            (self.max_retries >= 0, "max_retries must be 0 or more"),
            (self.retry_delay >= 0, "retry_delay must be 0 or more seconds"),
            (self.timeout is None or self.timeout > 0, "timeout must be positive seconds"),
            (self.max_rps is None or self.max_rps > 0, "max_rps must be positive"),
            (self.max_outage >= 0, "max_outage must be 0 or more seconds, e.g. 600"),
            (0.0 <= self.max_error_rate <= 1.0, "max_error_rate must be between 0 and 1"),
            (self.chunk_size >= 1, "chunk_size must be at least 1 row"),
            (self.flush_interval > 0, "flush_interval must be positive seconds"),
            (bool(self.prefix), "prefix must not be empty"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        try:
            Priority.parse(self.priority)
            self.limits()
        except ValueError as exc:
            raise InputError(str(exc).replace("max_concurrent_requests", "concurrency")) from None
        if self.params is not None and not isinstance(self.params, dict):
            raise InputError("params must be a JSON object, e.g. '{\"seed\": 1}'")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> BatchOptions:
        """Build from keywords, naming any that are not options."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown run_batch option(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def longest_wait(self) -> float:
        """No single wait (a huge Retry-After...) outlasts the run's outage budget."""
        return min(DEFAULT_MAX_RETRY_DELAY, max(self.retry_delay, self.max_outage))

    def limits(self) -> Limits:
        """The concurrency: a ceiling the limit adapts under, or ``auto``."""
        return Limits.parse(self.concurrency)

    def prompt_spec(self) -> PromptSpec:
        options = {name: getattr(self, name) for name in OPTION_NAMES}
        option_columns = {
            name: getattr(self, f"{name}_column")
            for name in OPTION_NAMES
            if getattr(self, f"{name}_column")
        }
        return PromptSpec(
            prompt_column=self.prompt_column,
            template=self.template,
            chat=self.chat,
            messages_column=self.messages_column,
            system=self.system,
            options={k: v for k, v in options.items() if v is not None},
            option_columns=option_columns,
        )

    def shaping(self) -> dict[str, Any]:
        """The values of the options that shape the output (JSON-safe)."""
        values = asdict(self)
        shaping: dict[str, Any] = json.loads(
            json.dumps({k: values[k] for k in SHAPING}, default=str)
        )
        return shaping
