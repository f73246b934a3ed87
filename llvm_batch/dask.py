"""``ddf.llvm``: the pandas accessor run partition by partition on Dask, one client per process.

Registered on ``import llvm_batch.dask`` (the ``dask`` extra). The only module that imports dask.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import pandas as pd
from dask.dataframe.extensions import register_dataframe_accessor

from .accessor import FrameRun, check_columns  # also registers df.llvm
from .batch import columns as cols
from .batch.prompts import PromptSpec
from .compat import Unpack
from .config import Priority, resolve_config
from .frame_options import (
    ClientOptions,
    FrameCall,
    FrameOptions,
    RunOptions,
    SamplingOptions,
    chat_spec,
    infer_spec,
    split_keywords,
)
from .sync import LLVMClient

__all__ = ["LLVMDaskAccessor", "close_clients", "result_meta"]

_CLIENTS: dict[Hashable, LLVMClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _forget_in_child() -> None:
    # A forked child has none of its parent's loop threads: it must make clients of its own.
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()
    _CLIENTS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _freeze(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value  # type: ignore[no-any-return]


def _client_key(options: ClientOptions) -> Hashable:
    key = _freeze(options)
    try:
        hash(key)
    except TypeError:
        raise TypeError(
            "ddf.llvm client options must be hashable values (numbers, strings, mappings, "
            "BreakerConfig), since each worker process keeps one client per set of options"
        ) from None
    return key


def _shared_client(options: ClientOptions) -> LLVMClient:
    """This process's client for ``options``, created on first use."""
    key = _client_key(options)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = LLVMClient(**options)
        return client


@atexit.register
def close_clients() -> None:
    """Close the clients this process keeps for ``ddf.llvm`` (also run at interpreter exit)."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()


def result_meta(meta: pd.DataFrame, prefix: str = cols.DEFAULT_PREFIX) -> pd.DataFrame:
    """``meta`` as ``df.llvm.infer`` returns it: clashing columns replaced, result columns added."""
    extra = pd.DataFrame(
        {f.name: pd.Series(dtype=pd.ArrowDtype(f.type)) for f in cols.result_schema(prefix)},
        index=meta.index[:0],
    )
    base = meta.iloc[:0].drop(columns=[c for c in extra.columns if c in meta.columns])
    return pd.concat([base, extra], axis=1)


def _worker_processes() -> int | None:
    """Worker processes of the active ``distributed`` client, or None without one."""
    try:
        from distributed import default_client

        client = default_client()  # type: ignore[no-untyped-call]
    except (ImportError, ValueError):
        return None
    try:
        # Some distributed releases list only five workers unless asked for all.
        info = client.scheduler_info(n_workers=-1)
    except TypeError:
        info = client.scheduler_info()
    return len(info.get("workers", {})) or None


@dataclass(frozen=True)
class _Partition:
    """What each partition runs: its prompt, resolved on the worker with that process's
    shared client (whose settings come from the worker's environment), through df.llvm's
    engine."""

    spec: PromptSpec
    model: str | None
    run: RunOptions
    client_options: ClientOptions

    def __call__(self, part: pd.DataFrame) -> pd.DataFrame:
        run: RunOptions = {**self.run, "client": _shared_client(self.client_options)}
        return FrameRun(part, FrameCall.resolve(self.spec, self.model, run, {})).run()


@register_dataframe_accessor("llvm")  # type: ignore[no-untyped-call]
class LLVMDaskAccessor:
    """``ddf.llvm``: lazily run each row of a Dask DataFrame through an LLVM server.

    Takes the keywords of ``df.llvm`` except ``client=`` and ``progress=``; client options
    (``base_url``, ``max_retries``, ...) build one :class:`LLVMClient` per worker process.
    ``max_concurrent_requests`` is the total for the whole computation: when a
    ``distributed`` client is active as the graph is built, each worker process gets
    ``max(1, total // worker processes)`` (so with more processes than the total, each still
    gets 1); without one (the threaded scheduler), the single process gets the total. With
    the multiprocessing scheduler the limit applies per process. Below its share, each
    worker's limit adapts to the server on its own; ``"auto"`` lets each find its share.
    The API key comes from ``api_key=`` or ``LLVM_API_KEY`` in the workers' environment.
    For ``chat``, give the messages column as JSON text: Dask turns object columns of lists
    into Python reprs unless ``dataframe.convert-string`` is off.
    """

    def __init__(self, obj: dd.DataFrame) -> None:
        self._obj = obj

    def _lazy(
        self,
        method: str,
        model: str | None,
        kwargs: FrameOptions,
        spec_of: Callable[[SamplingOptions], PromptSpec],
    ) -> dd.DataFrame:
        for name in ("client", "progress"):
            if name in kwargs:
                raise TypeError(f"ddf.llvm.{method} takes client options, not {name}=")
        sampling, run, client_options = split_keywords(kwargs)
        spec = spec_of(sampling)
        meta: pd.DataFrame = self._obj._meta
        check_columns(spec, list(meta.columns))
        # Settled here, so that a mistake fails as the graph is built, not on every worker.
        run["priority"] = Priority.parse(run["priority"])
        run["progress"] = False
        total = client_options.get("max_concurrent_requests")
        processes = _worker_processes()
        if isinstance(total, int) and processes is not None:  # "auto": each adapts its own
            client_options["max_concurrent_requests"] = max(1, int(total) // processes)
        resolve_config(**client_options)
        _client_key(client_options)
        partition = _Partition(spec, model, run, client_options)
        lazy: dd.DataFrame = self._obj.map_partitions(  # type: ignore[no-untyped-call]
            partition, meta=result_meta(meta, run["prefix"])
        )
        return lazy

    def infer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> dd.DataFrame:
        """Lazy ``df.llvm.infer`` per partition: prompt from a column, or ``template``."""
        return self._lazy("infer", model, kwargs, lambda s: infer_spec(prompt, template, s))

    def chat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> dd.DataFrame:
        """Lazy ``df.llvm.chat`` per partition: a messages column, or ``system`` plus ``user``."""
        return self._lazy("chat", model, kwargs, lambda s: chat_spec(messages, user, system, s))
