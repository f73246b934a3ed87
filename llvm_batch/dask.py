"""``ddf.llvm``: the pandas accessor run partition by partition on Dask, one client per process.

Registered on ``import llvm_batch.dask`` (the ``dask`` extra). The only module that imports dask.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import pandas as pd
from dask.dataframe.extensions import register_dataframe_accessor

from .accessor import LLVMFrameAccessor  # also registers df.llvm, used on each partition
from .batch import columns as cols
from .batch.prompts import OPTION_NAMES, PromptSpec
from .errors import InputError
from .options import resolve_config
from .sync import LLVMClient

__all__ = ["LLVMDaskAccessor", "close_clients", "result_meta"]

#: Keywords for the per-partition call; every other keyword is a client option.
_CALL_KEYS = (*OPTION_NAMES, "cache", "prefix", "priority", "max_outage")

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


def _client_key(options: Mapping[str, Any]) -> Hashable:
    key = _freeze(options)
    try:
        hash(key)
    except TypeError:
        raise TypeError(
            "ddf.llvm client options must be hashable values (numbers, strings, mappings, "
            "BreakerConfig), since each worker process keeps one client per set of options"
        ) from None
    return key


def _shared_client(options: Mapping[str, Any]) -> LLVMClient:
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
    """What each partition runs: the pandas accessor with this process's shared client."""

    method: str
    model: str | None
    arguments: Mapping[str, Any]
    client_options: Mapping[str, Any]

    def __call__(self, part: pd.DataFrame) -> pd.DataFrame:
        client = _shared_client(self.client_options)
        run = getattr(LLVMFrameAccessor(part), self.method)
        result: pd.DataFrame = run(self.model, client=client, progress=False, **self.arguments)
        return result


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
        spec: PromptSpec,
        prompt_args: dict[str, Any],
        kwargs: dict[str, Any],
    ) -> dd.DataFrame:
        for name in ("client", "progress"):
            if name in kwargs:
                raise TypeError(f"ddf.llvm.{method} takes client options, not {name}=")
        meta: pd.DataFrame = self._obj._meta
        missing = [c for c in spec.columns_needed() if c not in meta.columns]
        if missing:
            raise InputError(
                f"the frame has no column {', '.join(map(repr, missing))}; "
                f"its columns are: {', '.join(map(str, meta.columns))}"
            )
        arguments = {**prompt_args, **{k: kwargs.pop(k) for k in _CALL_KEYS if k in kwargs}}
        client_options = dict(kwargs)
        total = client_options.get("max_concurrent_requests")
        processes = _worker_processes()
        if isinstance(total, int) and processes is not None:  # "auto": each adapts its own
            client_options["max_concurrent_requests"] = max(1, int(total) // processes)
        resolve_config(**client_options)  # fail here rather than on every worker
        _client_key(client_options)
        partition = _Partition(method, model, arguments, client_options)
        prefix = arguments.get("prefix", cols.DEFAULT_PREFIX)
        lazy: dd.DataFrame = self._obj.map_partitions(  # type: ignore[no-untyped-call]
            partition, meta=result_meta(meta, prefix)
        )
        return lazy

    def infer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Any,
    ) -> dd.DataFrame:
        """Lazy ``df.llvm.infer`` per partition: prompt from a column, or ``template``."""
        spec = PromptSpec(prompt_column=prompt, template=template)
        prompt_args = {"prompt": prompt, "template": template}
        return self._lazy("infer", model, spec, prompt_args, kwargs)

    def chat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Any,
    ) -> dd.DataFrame:
        """Lazy ``df.llvm.chat`` per partition: a messages column, or ``system`` plus ``user``."""
        spec = PromptSpec(chat=True, messages_column=messages, template=user, system=system)
        prompt_args = {"messages": messages, "user": user, "system": system}
        return self._lazy("chat", model, spec, prompt_args, kwargs)
