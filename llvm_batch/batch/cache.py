"""Successful results kept by (model, inputs, options), so that ``df.llvm`` re-runs send only
what is new: in memory, or in a directory (SQLite) that outlives the process."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from typing import Any

from . import columns as cols
from .prompts import Request


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


def mark_cached(result: cols.RowResult) -> cols.RowResult:
    """``result`` as served from the cache: no attempts, no waiting, ``cached`` in its metadata."""
    meta = json.loads(result.metadata) if result.metadata else {}
    meta["cached"] = True
    return result._replace(
        attempts=0,
        retry_wait_s=0.0,
        latency_ms=0.0,
        metadata=json.dumps(meta, sort_keys=True, separators=(",", ":")),
    )
