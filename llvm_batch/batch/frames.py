"""In-memory tables through the server: the engine of ``df.llvm`` (no file, no checkpoint).

Rows are rendered by the same :class:`PromptSpec` and sent by the same :class:`Dispatcher` as
the file runner; what comes back is the table of result columns, one row per input row, in
order. An optional cache skips prompts that already succeeded with the same model and options.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
from typing import Any

import pyarrow as pa

from ..client import AsyncLLVMClient
from ..options import DEFAULT_MAX_OUTAGE, Priority
from . import columns as cols
from .dispatch import Dispatcher
from .feed import rows_ahead
from .progress import Progress
from .prompts import PromptSpec, Request


class ResultCache:
    """Successful results by (model, inputs, options): in memory, or in a directory (SQLite)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._memory: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(os.fspath(directory), "llvm-cache.sqlite")
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, row TEXT)")
            self._db.commit()

    @staticmethod
    def key(model: str, request: Request, protocol: str = "llvm") -> str:
        parts: list[Any] = [model, request.inputs, request.options]
        if protocol != "llvm" or request.chat:
            parts += [protocol, request.chat]
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> cols.RowResult | None:
        with self._lock:
            if key in self._memory:
                return cols.RowResult(*self._memory[key])
            if self._db is None:
                return None
            found = self._db.execute("SELECT row FROM results WHERE key = ?", (key,)).fetchone()
        row = json.loads(found[0]) if found else None
        # A row stored by an llvm-batch with other result columns is a miss, not a crash.
        return cols.RowResult(*row) if row and len(row) == len(cols.RESULT_FIELDS) else None

    def put(self, key: str, result: cols.RowResult) -> None:
        with self._lock:
            self._memory[key] = tuple(result)
            if self._db is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO results VALUES (?, ?)", (key, json.dumps(result))
                )
                self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            if self._db is not None:
                return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return len(self._memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _mark_cached(result: cols.RowResult) -> cols.RowResult:
    meta = json.loads(result.metadata) if result.metadata else {}
    meta["cached"] = True
    return result._replace(
        attempts=0,
        retry_wait_s=0.0,
        latency_ms=0.0,
        metadata=json.dumps(meta, sort_keys=True, separators=(",", ":")),
    )


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
                results[index] = _mark_cached(hit)
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
