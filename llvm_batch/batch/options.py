"""Options of a batch run: one finished :class:`ClientConfig` plus the batch's own settings.

:meth:`BatchOptions.from_kwargs` is the batch face's boundary: it splits ``run_batch``'s flat
keywords into the client's and the batch's, resolves the client's once
(:func:`~llvm_batch.config.resolve_config`), and turns every bad value into an
:class:`InputError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..config import (
    DEFAULT_MAX_OUTAGE,
    DEFAULT_PROTOCOL,
    ClientConfig,
    Limits,
    Priority,
    resolve_config,
)
from ..errors import InputError
from .columns import DEFAULT_PREFIX
from .prompts import OPTION_NAMES, PromptSpec
from .workers import most_workers

DEFAULT_CONCURRENCY = 16
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_FLUSH_INTERVAL = 2.0
DEFAULT_PROGRESS_INTERVAL = 10.0

#: ``run_batch`` keywords that are client settings, and the client keyword each one sets.
CLIENT_KEYWORDS = {
    "model": "default_model",
    "base_url": "base_url",
    "api_key": "api_key",
    "protocol": "protocol",
    "concurrency": "max_concurrent_requests",
    "max_retries": "max_retries",
    "retry_delay": "retry_delay",
    "timeout": "timeout",
    "max_rps": "max_rps",
    "max_response_bytes": "max_response_bytes",
    "breaker": "breaker",
    "debug": "debug",
}

#: Options that change what ends up in the output; a checkpoint is tied to their values.
SHAPING = (
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
    """Everything ``run_batch`` and ``llvm-batch run`` accept besides input and output.

    ``client`` is the finished client configuration (its ``default_model`` is the run's
    model); the other fields belong to the batch alone.
    """

    client: ClientConfig = field(default_factory=ClientConfig)
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
    priority: Priority = Priority.NORMAL
    max_outage: float = DEFAULT_MAX_OUTAGE
    max_error_rate: float = 0.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    overwrite: bool = False
    wait_for_lock: bool = False
    retry_errors: bool = False
    dry_run: bool = False
    progress: bool | None = None
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    quiet: bool = False

    def __post_init__(self) -> None:
        checks = (
            (self.max_outage >= 0, "max_outage must be 0 or more seconds, e.g. 600"),
            (0.0 <= self.max_error_rate <= 1.0, "max_error_rate must be between 0 and 1"),
            (self.chunk_size >= 1, "chunk_size must be at least 1 row"),
            (self.flush_interval > 0, "flush_interval must be positive seconds"),
            (bool(self.prefix), "prefix must not be empty"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.params is not None and not isinstance(self.params, dict):
            raise InputError("params must be a JSON object, e.g. '{\"seed\": 1}'")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> BatchOptions:
        """Build from ``run_batch``'s flat keywords, naming any that are not options."""
        own = {f.name for f in fields(cls)} - {"client"}
        unknown = sorted(set(kwargs) - own - set(CLIENT_KEYWORDS))
        if unknown:
            raise TypeError(f"unknown run_batch option(s): {', '.join(unknown)}")
        for name, value in kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                # nan passes every "> 0" check and inf waits forever: neither is a setting.
                raise InputError(f"{name} must be a finite number; got {value}")
        batch = {k: v for k, v in kwargs.items() if k in own}
        settings = {CLIENT_KEYWORDS[k]: v for k, v in kwargs.items() if k in CLIENT_KEYWORDS}
        try:
            if "priority" in batch:
                batch["priority"] = Priority.parse(batch["priority"])
            client = _client_config(settings, batch.get("max_outage", DEFAULT_MAX_OUTAGE))
        except ValueError as exc:
            raise InputError(str(exc).replace("max_concurrent_requests", "concurrency")) from None
        return cls(client=client, **batch)

    @property
    def model(self) -> str | None:
        """The run's model: ``model=``, else ``LLVM_DEFAULT_MODEL`` (resolved in ``client``)."""
        return self.client.default_model

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
        """The values of the options that shape the output (JSON-safe), with the model.

        The protocol is left out when it is the default one, so checkpoints of runs before
        protocols existed still resume.
        """
        values = {"model": self.model, **{k: getattr(self, k) for k in SHAPING}}
        shaping: dict[str, Any] = json.loads(json.dumps(values, default=str))
        if self.client.protocol != DEFAULT_PROTOCOL:
            shaping["protocol"] = self.client.protocol
        return shaping


def _client_config(settings: dict[str, Any], max_outage: float) -> ClientConfig:
    """The batch's client: its own default concurrency, a queue that never refuses a worker,
    and no single wait (a huge Retry-After...) longer than the run's outage budget."""
    concurrency = settings.pop("max_concurrent_requests", None)
    limits = Limits.parse(DEFAULT_CONCURRENCY if concurrency is None else concurrency)
    config = resolve_config(
        max_concurrent_requests=replace(limits, queue_size=most_workers(limits.ceiling)),
        **settings,
    )
    retry = config.retry
    longest = min(retry.max_delay, max(retry.delay, max_outage))
    return replace(config, retry=replace(retry, max_delay=longest))
