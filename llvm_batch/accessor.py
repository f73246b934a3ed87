"""``df.llvm`` and ``series.llvm``: the batch runner's reliability from one line on a DataFrame.

Registered on ``import llvm_batch``. Each method returns a new DataFrame: the original columns
and index untouched, plus the result columns with Arrow-backed dtypes. A failed row never
raises; it is a row with ``llvm_status="error"`` and the reason.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pandas as pd
import pyarrow as pa

from .batch import columns as cols
from .batch.cache import ResultCache
from .batch.prompts import OPTION_NAMES, PromptSpec
from .batch.tables import infer_table
from .client import AsyncLLVMClient
from .errors import InputError
from .loops import run_sync
from .options import DEFAULT_MAX_OUTAGE, ENV_DEFAULT_MODEL, Priority
from .sync import LLVMClient

_MEMORY_CACHE = ResultCache()

CacheOption = bool | str | os.PathLike[str] | ResultCache | None


def _cache(cache: CacheOption) -> ResultCache | None:
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


def _progress_mode(progress: bool | None) -> str:
    if progress is False:
        return "off"
    if progress is True or _in_notebook() or sys.stderr.isatty():
        return "bar"
    return "off"


def _arrow_input(frame: pd.DataFrame, spec: PromptSpec) -> pa.Table:
    missing = [c for c in spec.columns_needed() if c not in frame.columns]
    if missing:
        spec.check(pa.schema([pa.field(str(c), pa.null()) for c in frame.columns]))
    needed = frame[spec.columns_needed()].reset_index(drop=True)
    try:
        return pa.Table.from_pandas(needed, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InputError(f"can't read the prompt columns: {exc}") from None


def _attach(frame: pd.DataFrame, results: pa.Table) -> pd.DataFrame:
    extra = results.to_pandas(types_mapper=pd.ArrowDtype)
    extra.index = frame.index
    clash = [c for c in extra.columns if c in frame.columns]
    base = frame.drop(columns=clash) if clash else frame
    return pd.concat([base, extra], axis=1)


class _Runner:
    """One ``infer``/``chat`` call: its spec, model, client choice and options."""

    def __init__(
        self,
        frame: pd.DataFrame,
        spec: PromptSpec,
        model: str | None,
        *,
        client: LLVMClient | AsyncLLVMClient | None,
        progress: bool | None,
        cache: CacheOption,
        prefix: str,
        priority: Priority | str,
        max_outage: float,
        client_options: dict[str, Any],
    ) -> None:
        if client is not None and client_options:
            raise TypeError(
                f"pass either client= or client options, not both ({', '.join(client_options)})"
            )
        self.frame = frame
        self.spec = spec
        self.client = client
        self.client_options = client_options
        self.model = (
            model
            or (client.get_default_model() if client is not None else None)
            or client_options.get("default_model")
            or os.environ.get(ENV_DEFAULT_MODEL)
        )
        if not self.model:
            raise ValueError(
                "no model given: pass model=, a client with a default model, "
                f"or set {ENV_DEFAULT_MODEL}"
            )
        self.table = _arrow_input(frame, spec)
        self.kwargs: dict[str, Any] = {
            "prefix": prefix,
            "priority": Priority.parse(priority),
            "max_outage": max_outage,
            "progress": _progress_mode(progress),
            "cache": _cache(cache),
        }

    async def _results(self, client: AsyncLLVMClient) -> pa.Table:
        assert self.model is not None
        return await infer_table(self.table, self.spec, client, self.model, **self.kwargs)

    async def _with_own_client(self) -> pa.Table:
        options = {"default_model": self.model, **self.client_options}
        async with AsyncLLVMClient(**options) as client:
            return await self._results(client)

    def run(self) -> pd.DataFrame:
        if isinstance(self.client, AsyncLLVMClient):
            raise TypeError(
                "an AsyncLLVMClient needs `await df.llvm.ainfer(...)`; pass an LLVMClient here"
            )
        if isinstance(self.client, LLVMClient):
            table = self.client.loop_thread.run(self._results(self.client.async_client))
        else:
            table = run_sync(self._with_own_client())
        return _attach(self.frame, table)

    async def arun(self) -> pd.DataFrame:
        if isinstance(self.client, LLVMClient):
            future = self.client.loop_thread.submit(self._results(self.client.async_client))
            table = await asyncio.wrap_future(future)
        elif isinstance(self.client, AsyncLLVMClient):
            table = await self._results(self.client)
        else:
            table = await self._with_own_client()
        return _attach(self.frame, table)


def _infer_spec(prompt: str, template: str | None, options: dict[str, Any]) -> PromptSpec:
    return PromptSpec(prompt_column=prompt, template=template, options=_given(options))


def _chat_spec(
    messages: str, user: str | None, system: str | None, options: dict[str, Any]
) -> PromptSpec:
    return PromptSpec(
        chat=True,
        messages_column=messages,
        template=user,
        system=system,
        options=_given(options),
    )


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


_RUN_KEYS = ("client", "progress", "cache", "prefix", "priority", "max_outage")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    run = {k: kwargs.pop(k) for k in _RUN_KEYS if k in kwargs}
    run.setdefault("client", None)
    run.setdefault("progress", None)
    run.setdefault("cache", None)
    run.setdefault("prefix", cols.DEFAULT_PREFIX)
    run.setdefault("priority", Priority.NORMAL)
    run.setdefault("max_outage", DEFAULT_MAX_OUTAGE)
    return run, kwargs


@pd.api.extensions.register_dataframe_accessor("llvm")
class LLVMFrameAccessor:
    """``df.llvm``: run each row of a DataFrame through an LLVM server."""

    def __init__(self, obj: pd.DataFrame) -> None:
        self._obj = obj

    def _runner(self, spec_of: Any, model: str | None, kwargs: dict[str, Any]) -> _Runner:
        options = {name: kwargs.pop(name, None) for name in OPTION_NAMES}
        spec = spec_of(options)
        run, client_options = _split(kwargs)
        return _Runner(self._obj, spec, model, client_options=client_options, **run)

    def infer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Inference per row: prompt from a column, or ``template`` over columns."""
        return self._runner(lambda o: _infer_spec(prompt, template, o), model, kwargs).run()

    async def ainfer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """:meth:`infer` for async code."""
        return await self._runner(lambda o: _infer_spec(prompt, template, o), model, kwargs).arun()

    def chat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Chat per row: a messages column, or ``system`` plus a ``user`` template."""
        return self._runner(lambda o: _chat_spec(messages, user, system, o), model, kwargs).run()

    async def achat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """:meth:`chat` for async code."""
        return await self._runner(
            lambda o: _chat_spec(messages, user, system, o), model, kwargs
        ).arun()

    def retry_errors(
        self, model: str | None = None, *, chat: bool = False, **kwargs: Any
    ) -> pd.DataFrame:
        """Re-run only the rows whose status is ``error``; pass the first call's keywords.

        ``chat=True`` retries a :meth:`chat` result (``messages=``/``user=``/``system=``).
        """
        prefix = kwargs.get("prefix", cols.DEFAULT_PREFIX)
        status = prefix + "status"
        if status not in self._obj.columns:
            raise InputError(f"no {status} column: retry_errors works on a df.llvm result")
        failed = (self._obj[status] == cols.STATUS_ERROR).fillna(False).to_numpy(dtype=bool)
        out = self._obj.copy()
        if not failed.any():
            return out
        rows = self._obj[failed].drop(columns=cols.result_names(prefix))
        redone = rows.llvm.chat(model, **kwargs) if chat else rows.llvm.infer(model, **kwargs)
        for name in cols.result_names(prefix):
            out.loc[failed, name] = redone[name].to_numpy()
        return out


@pd.api.extensions.register_series_accessor("llvm")
class LLVMSeriesAccessor:
    """``series.llvm``: a Series of prompts through an LLVM server."""

    def __init__(self, obj: pd.Series) -> None:
        self._obj = obj

    def _named(self, result: pd.DataFrame) -> pd.DataFrame:
        """The prompt column back under the Series' own name."""
        name = self._obj.name
        return result if name is None else result.rename(columns={"prompt": name})

    def infer(self, model: str | None = None, **kwargs: Any) -> pd.DataFrame:
        """Inference for each prompt of the Series; a DataFrame of prompts and results."""
        return self._named(self._obj.to_frame("prompt").llvm.infer(model, **kwargs))

    async def ainfer(self, model: str | None = None, **kwargs: Any) -> pd.DataFrame:
        """:meth:`infer` for async code."""
        return self._named(await self._obj.to_frame("prompt").llvm.ainfer(model, **kwargs))
