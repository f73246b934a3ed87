"""Options of a batch run: defaults, validation, and which of them shape the output."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..client import AsyncLLVMClient
from ..errors import InputError
from ..options import (
    DEFAULT_MAX_OUTAGE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_DELAY,
    DEFAULT_PROTOCOL,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    ENV_PROTOCOL,
    Limits,
    Priority,
    check_retry_delay,
    parse_protocol,
)
from .columns import DEFAULT_PREFIX
from .prompts import OPTION_NAMES, PromptSpec

DEFAULT_CONCURRENCY = 16
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_FLUSH_INTERVAL = 2.0
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
    protocol: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int | str = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    timeout: float | None = DEFAULT_TIMEOUT
    max_rps: float | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    breaker: dict[str, Any] | bool = True
    priority: str = "normal"
    max_outage: float = DEFAULT_MAX_OUTAGE
    max_error_rate: float = 0.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    overwrite: bool = False
    wait_for_lock: bool = False
    retry_errors: bool = False
    dry_run: bool = False
    local_server: bool = False
    progress: bool | None = None
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    quiet: bool = False
    debug: bool = False
    summary_json: str | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                # nan passes every "> 0" check and inf waits forever: neither is a setting.
                raise InputError(f"{item.name} must be a finite number; got {value}")
        checks = (
            (self.max_retries >= 0, "max_retries must be 0 or more"),
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
            check_retry_delay(self.retry_delay)
            Priority.parse(self.priority)
            if self.protocol is not None:
                object.__setattr__(self, "protocol", parse_protocol(self.protocol))
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

    def client(
        self,
        base_url: str | None,
        model: str,
        *,
        protocol: str,
        queue_size: int,
        sleep: Callable[[float], Awaitable[None]],
    ) -> AsyncLLVMClient:
        """The client these options ask for (``sleep``: the worker pool's, see workers.py)."""
        return AsyncLLVMClient(
            base_url=base_url,
            api_key=self.api_key,
            default_model=model,
            max_concurrent_requests=self.limits(),
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
            max_retry_delay=self.longest_wait(),
            timeout=self.timeout,
            max_rps=self.max_rps,
            max_response_bytes=self.max_response_bytes,
            breaker=self.breaker,
            protocol=protocol,
            queue_size=queue_size,
            debug=self.debug,
            sleep=sleep,
        )
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

    def protocol_in_use(self) -> str:
        """The protocol option, else ``LLVM_PROTOCOL``, else ``llvm``."""
        if self.protocol is not None:
            return self.protocol
        try:
            return parse_protocol(os.environ.get(ENV_PROTOCOL) or DEFAULT_PROTOCOL)
        except ValueError as exc:
            raise InputError(f"{exc} (from {ENV_PROTOCOL})") from None

    def shaping(self, protocol: str = DEFAULT_PROTOCOL) -> dict[str, Any]:
        """The values of the options that shape the output (JSON-safe).

        ``protocol`` is the one in use (the option, else ``LLVM_PROTOCOL``); the default one
        is left out, so checkpoints of runs before protocols existed still resume.
        """
        values = asdict(self)
        shaping: dict[str, Any] = json.loads(
            json.dumps({k: values[k] for k in SHAPING}, default=str)
        )
        if protocol != DEFAULT_PROTOCOL:
            shaping["protocol"] = protocol
        return shaping
