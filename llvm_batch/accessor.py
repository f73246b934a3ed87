"""``df.llvm`` and ``series.llvm``: the batch runner's reliability from one line on a DataFrame.

Registered on ``import llvm_batch``. Each method returns a new DataFrame: the original columns
and index untouched, plus the result columns with Arrow-backed dtypes. A failed row never
raises; it is a row with ``llvm_status="error"`` and the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

from .batch import columns as cols
from .batch.prompts import PromptSpec
from .batch.tables import infer_table
from .client import AsyncLLVMClient
from .compat import Unpack
from .errors import InputError
from .frame_options import (
    RUN_DEFAULTS,
    FrameCall,
    FrameOptions,
    SamplingOptions,
    chat_spec,
    infer_spec,
    split_keywords,
)
from .loops import run_sync
from .sync import LLVMClient


def check_columns(spec: PromptSpec, columns: list[Any]) -> None:
    """Raise the :class:`InputError` that names any column ``spec`` reads and ``columns`` lack."""
    if any(c not in columns for c in spec.columns_needed()):
        spec.check(pa.schema([pa.field(str(c), pa.null()) for c in columns]))


def _arrow_input(frame: pd.DataFrame, spec: PromptSpec) -> pa.Table:
    check_columns(spec, list(frame.columns))
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


class FrameRun:
    """A resolved :class:`FrameCall` over one DataFrame: its prompts as Arrow, then results."""

    def __init__(self, frame: pd.DataFrame, call: FrameCall) -> None:
        self.frame = frame
        self.call = call
        self.table = _arrow_input(frame, call.spec)

    async def _results(self, client: AsyncLLVMClient) -> pa.Table:
        call = self.call
        return await infer_table(
            self.table,
            call.spec,
            client,
            call.model,
            prefix=call.prefix,
            priority=call.priority,
            max_outage=call.max_outage,
            progress=call.progress,
            cache=call.cache,
        )

    async def _with_own_client(self) -> pa.Table:
        async with AsyncLLVMClient(config=self.call.config) as client:
            return await self._results(client)

    def run(self) -> pd.DataFrame:
        client = self.call.client
        if isinstance(client, AsyncLLVMClient):
            raise TypeError(
                "an AsyncLLVMClient needs `await df.llvm.ainfer(...)`; pass an LLVMClient here"
            )
        if isinstance(client, LLVMClient):
            table = client.loop_thread.run(self._results(client.async_client))
        else:
            table = run_sync(self._with_own_client())
        return _attach(self.frame, table)

    async def arun(self) -> pd.DataFrame:
        client = self.call.client
        if isinstance(client, LLVMClient):
            future = client.loop_thread.submit(self._results(client.async_client))
            table = await asyncio.wrap_future(future)
        elif isinstance(client, AsyncLLVMClient):
            table = await self._results(client)
        else:
            table = await self._with_own_client()
        return _attach(self.frame, table)


def _given(**prompt_args: str | None) -> dict[str, Any]:
    return {name: value for name, value in prompt_args.items() if value is not None}


@pd.api.extensions.register_dataframe_accessor("llvm")
class LLVMFrameAccessor:
    """``df.llvm``: run each row of a DataFrame through an LLVM server.

    Every method takes :class:`~llvm_batch.frame_options.FrameOptions` as keywords: sampling
    options (``max_tokens``...), run options (``client``, ``progress``, ``cache``, ``prefix``,
    ``priority``, ``max_outage``) and client options (``base_url``, ``max_retries``...).
    """

    def __init__(self, obj: pd.DataFrame) -> None:
        self._obj = obj

    def _run(
        self,
        model: str | None,
        kwargs: FrameOptions,
        spec_of: Callable[[SamplingOptions], PromptSpec],
    ) -> FrameRun:
        sampling, run, client_options = split_keywords(kwargs)
        return FrameRun(self._obj, FrameCall.resolve(spec_of(sampling), model, run, client_options))

    def infer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> pd.DataFrame:
        """Inference per row: prompt from a column, or ``template`` over columns."""
        return self._run(model, kwargs, lambda s: infer_spec(prompt, template, s)).run()

    async def ainfer(
        self,
        model: str | None = None,
        *,
        prompt: str = "prompt",
        template: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> pd.DataFrame:
        """:meth:`infer` for async code."""
        return await self._run(model, kwargs, lambda s: infer_spec(prompt, template, s)).arun()

    def chat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> pd.DataFrame:
        """Chat per row: a messages column, or ``system`` plus a ``user`` template."""
        return self._run(model, kwargs, lambda s: chat_spec(messages, user, system, s)).run()

    async def achat(
        self,
        model: str | None = None,
        *,
        messages: str = "messages",
        user: str | None = None,
        system: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> pd.DataFrame:
        """:meth:`chat` for async code."""
        return await self._run(model, kwargs, lambda s: chat_spec(messages, user, system, s)).arun()

    def retry_errors(
        self,
        model: str | None = None,
        *,
        chat: bool = False,
        prompt: str | None = None,
        template: str | None = None,
        messages: str | None = None,
        user: str | None = None,
        system: str | None = None,
        **kwargs: Unpack[FrameOptions],
    ) -> pd.DataFrame:
        """Re-run only the rows whose status is ``error``; pass the first call's keywords.

        ``chat=True`` retries a :meth:`chat` result (``messages=``/``user=``/``system=``).
        """
        infer_args = _given(prompt=prompt, template=template)
        chat_args = _given(messages=messages, user=user, system=system)
        own, other = (chat_args, infer_args) if chat else (infer_args, chat_args)
        if other:
            raise TypeError(
                f"retry_errors(chat={chat}) takes the keywords of "
                f"{'chat' if chat else 'infer'}, not {', '.join(f'{n}=' for n in other)}"
            )
        prefix = kwargs.get("prefix", RUN_DEFAULTS["prefix"])
        status = prefix + "status"
        if status not in self._obj.columns:
            raise InputError(f"no {status} column: retry_errors works on a df.llvm result")
        failed = (self._obj[status] == cols.STATUS_ERROR).fillna(False).to_numpy(dtype=bool)
        out = self._obj.copy()
        if not failed.any():
            return out
        rows = self._obj[failed].drop(columns=cols.result_names(prefix))
        again = rows.llvm.chat if chat else rows.llvm.infer
        redone = again(model, **own, **kwargs)
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

    def infer(self, model: str | None = None, **kwargs: Unpack[FrameOptions]) -> pd.DataFrame:
        """Inference for each prompt of the Series; a DataFrame of prompts and results."""
        return self._named(self._obj.to_frame("prompt").llvm.infer(model, **kwargs))

    async def ainfer(
        self, model: str | None = None, **kwargs: Unpack[FrameOptions]
    ) -> pd.DataFrame:
        """:meth:`infer` for async code."""
        return self._named(await self._obj.to_frame("prompt").llvm.ainfer(model, **kwargs))
