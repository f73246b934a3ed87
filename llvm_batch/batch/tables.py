"""An in-memory Arrow table of prompts through a client: the engine of ``df.llvm`` (no file,
no checkpoint).

Rows are rendered by the same :class:`PromptSpec` and sent by the same :class:`Dispatcher` as
the file runner; what comes back is the table of result columns, one row per input row, in
order. An optional :class:`~llvm_batch.batch.cache.ResultCache` skips prompts that already
succeeded with the same model and options.
"""

from __future__ import annotations

import asyncio

import pyarrow as pa

from ..client import AsyncLLVMClient
from ..config import DEFAULT_MAX_OUTAGE, Priority
from . import columns as cols
from .cache import ResultCache, mark_cached
from .dispatch import Dispatcher
from .feed import rows_ahead
from .progress import Progress
from .prompts import PromptSpec, Request


async def infer_table(
    table: pa.Table,
    spec: PromptSpec,
    client: AsyncLLVMClient,
    model: str,
    *,
    prefix: str = cols.DEFAULT_PREFIX,
    priority: Priority = Priority.NORMAL,
    max_outage: float = DEFAULT_MAX_OUTAGE,
    progress: str = "off",
    cache: ResultCache | None = None,
) -> pa.Table:
    """The result columns for every row of ``table``, in order."""
    spec.check(table.schema)
    batch = table.combine_chunks().to_batches()
    requests: list[Request | str] = []
    for part in batch:
        requests.extend(spec.render(part))
    results: list[cols.RowResult | None] = [None] * len(requests)
    dispatcher = Dispatcher(client, model, priority=priority, max_outage=max_outage)
    bar = Progress(
        len(requests),
        mode=progress,
        status=lambda: {
            "limit": f"{client.concurrency_limit}/{client.config.limits.ceiling}",
            "breaker": client.breaker_state,
        },
    )
    window = asyncio.Semaphore(rows_ahead(client.config.limits.ceiling))

    async def one(index: int, request: Request) -> None:
        try:
            if cache is None:
                results[index] = await dispatcher.send(request)
                return
            key = ResultCache.key(model, request, client.config.protocol)
            hit = cache.get(key)
            if hit is not None:
                results[index] = mark_cached(hit)
                return
            result = results[index] = await dispatcher.send(request)
            if result is not None and result.status == cols.STATUS_OK:
                cache.put(key, result)
        finally:
            window.release()
            bar.advance()

    tasks = []
    try:
        for index, request in enumerate(requests):
            if isinstance(request, str):
                results[index] = cols.skipped(request, model)
                bar.advance()
                continue
            await window.acquire()
            if dispatcher.stop_code is not None:
                window.release()
                break
            tasks.append(asyncio.create_task(one(index, request)))
        await asyncio.gather(*tasks)
    finally:
        bar.close()
    stopped = cols.stopped(dispatcher.stop_reason, model)
    filled = [result if result is not None else stopped for result in results]
    return pa.table(dict(zip(cols.result_names(prefix), cols.result_arrays(filled), strict=True)))
