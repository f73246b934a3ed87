"""The keywords of ``df.llvm`` and ``ddf.llvm``: defined once (:class:`FrameOptions`), split
once (:func:`split_keywords`) and resolved once into a finished :class:`FrameCall`.

Past its prompt arguments, every frame method takes the same keywords: the sampling options
sent with each row, the run keywords of one call, and the keywords that build a client
(:class:`~llvm_batch.config.ClientSettings` plus where and as whom to connect).
:meth:`FrameCall.resolve` is the public boundary: environment, metadata, model, priority,
cache and progress are settled there, and the layers below take the finished values.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypedDict, cast

from .batch import columns as cols
from .batch.cache import ResultCache
from .batch.prompts import PromptSpec
from .client import AsyncLLVMClient
from .config import (
    DEFAULT_MAX_OUTAGE,
    ENV_DEFAULT_MODEL,
    ClientConfig,
    ClientSettings,
    Priority,
    resolve_config,
)
from .sync import LLVMClient

#: ``cache=``: None/False no cache, True the process-wide memory cache, a path a directory cache.
CacheOption = bool | str | os.PathLike[str] | ResultCache | None

#: What ``df.llvm`` says when no model is found (after model=, the client, metadata, the env).
MODEL_HINT = f"pass model=, a client with a default model, or set {ENV_DEFAULT_MODEL}"


class SamplingOptions(TypedDict, total=False):
    """Generation options sent with every row; left out or None, the server's default."""

    max_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    params: Mapping[str, Any] | None


class RunOptions(TypedDict, total=False):
    """How one call runs: which client, a progress bar, a result cache, the result columns'
    prefix, the requests' priority and how long to wait out a server that is down."""

    client: LLVMClient | AsyncLLVMClient | None
    progress: bool | None
    cache: CacheOption
    prefix: str
    priority: Priority | str
    max_outage: float


class ClientOptions(ClientSettings, total=False):
    """The keywords that build a client: its settings, plus where and as whom to connect."""

    base_url: str | None
    api_key: str | None
    default_model: str | None
    metadata: Mapping[str, Any] | None


class FrameOptions(SamplingOptions, RunOptions, ClientOptions, total=False):
    """Every keyword of ``df.llvm``/``series.llvm``/``ddf.llvm`` methods past the prompt's."""


#: The run keywords a call leaves out.
RUN_DEFAULTS: Final[RunOptions] = {
    "client": None,
    "progress": None,
    "cache": None,
    "prefix": cols.DEFAULT_PREFIX,
    "priority": Priority.NORMAL,
    "max_outage": DEFAULT_MAX_OUTAGE,
}

SAMPLING_NAMES: Final = frozenset(SamplingOptions.__annotations__)
RUN_NAMES: Final = frozenset(RunOptions.__annotations__)


def split_keywords(kwargs: FrameOptions) -> tuple[SamplingOptions, RunOptions, ClientOptions]:
    """A call's keywords as (the sampling options given, the run options with their defaults,
    the client's keywords). A keyword of none of them lands with the client's, whose
    resolution names it."""
    sampling = {k: v for k, v in kwargs.items() if k in SAMPLING_NAMES and v is not None}
    run = {**RUN_DEFAULTS, **{k: v for k, v in kwargs.items() if k in RUN_NAMES}}
    client = {k: v for k, v in kwargs.items() if k not in SAMPLING_NAMES | RUN_NAMES}
    return cast(SamplingOptions, sampling), cast(RunOptions, run), cast(ClientOptions, client)


def infer_spec(prompt: str, template: str | None, sampling: SamplingOptions) -> PromptSpec:
    """``infer``'s prompt: the ``prompt`` column, or ``template`` over columns."""
    return PromptSpec(prompt_column=prompt, template=template, options=dict(sampling))


def chat_spec(
    messages: str, user: str | None, system: str | None, sampling: SamplingOptions
) -> PromptSpec:
    """``chat``'s prompt: the ``messages`` column, or ``system`` plus a ``user`` template."""
    return PromptSpec(
        chat=True, messages_column=messages, template=user, system=system, options=dict(sampling)
    )


_MEMORY_CACHE = ResultCache()


def result_cache(cache: CacheOption) -> ResultCache | None:
    """None/False: no cache; True: the process-wide memory cache; a path: a directory cache."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return _MEMORY_CACHE
    if isinstance(cache, ResultCache):
        return cache
    return ResultCache(cache)


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_mode(progress: bool | None) -> str:
    """``progress=``: True a bar, False none, None a bar in a notebook or on a terminal."""
    if progress is False:
        return "off"
    if progress is True or _in_notebook() or sys.stderr.isatty():
        return "bar"
    return "off"


@dataclass(frozen=True)
class FrameCall:
    """One frame call, resolved: its prompt, model, client (or the config of its own client)
    and run values, all finished."""

    spec: PromptSpec
    model: str
    config: ClientConfig
    client: LLVMClient | AsyncLLVMClient | None
    priority: Priority
    prefix: str
    max_outage: float
    progress: str
    cache: ResultCache | None

    @classmethod
    def resolve(
        cls, spec: PromptSpec, model: str | None, run: RunOptions, client_options: ClientOptions
    ) -> FrameCall:
        """The one resolution: the given client's config, or ``client_options`` resolved with
        metadata and the environment; the model from ``model=``, else that config's default.
        ``run`` is complete, as :func:`split_keywords` returns it."""
        client = run["client"]
        if client is not None and client_options:
            raise TypeError(
                f"pass either client= or client options, not both ({', '.join(client_options)})"
            )
        if client is not None:
            config = client.config
        else:
            options = ClientOptions(**client_options)
            if model:  # the call's model is its client's default, as in a batch run
                options["default_model"] = model
            config = resolve_config(**options)
        return cls(
            spec=spec,
            model=config.model(model, hint=MODEL_HINT),
            config=config,
            client=client,
            priority=Priority.parse(run["priority"]),
            prefix=run["prefix"],
            max_outage=run["max_outage"],
            progress=progress_mode(run["progress"]),
            cache=result_cache(run["cache"]),
        )
