"""Servers that fail the way real inference servers do, ``run_batch`` beside a bare retry loop.

Used by ``python benchmarks/resilience.py overload|flaky|outage|all``. Each scenario starts the
reference server as a subprocess (127.0.0.1 only), runs the bare loop and ``run_batch`` on the
same rows with the same attempts and waits, one after the other in one run, and prints both.

The bare loop is what a careful user writes by hand: one aiohttp session, N workers over a
shared iterator, retrying 503/429/resets/broken JSON with doubling waits (the same jittered
ceilings as llvm-batch: ``retry_delay * 2**n``, drawn from their upper half), no breaker, no
adaptive limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from support import MODEL, ServerProcess, write_prompts

from llvm_batch.batch import run_batch


@dataclass
class Figures:
    name: str
    seconds: float
    rows: int
    failed: int
    refused_after_5s: float | None = None  # share of requests answered 503 after the first 5 s
    done_after_back_s: float | None = None
    limit: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        parts = [
            f"{self.name:28s} {self.seconds:7.2f} s  {self.rows_per_s:7.0f} rows/s  "
            f"failed {self.failed}"
        ]
        if self.refused_after_5s is not None:
            parts.append(f"503 after 5 s {self.refused_after_5s * 100:.2f}%")
        if self.done_after_back_s is not None:
            parts.append(f"done {self.done_after_back_s:.2f} s after the server is back")
        if self.limit:
            parts.append(f"limit {self.limit}")
        return "  ".join(parts)


async def _bare(url: str, prompts: list[str], concurrency: int, attempts: int, delay: float):
    import aiohttp

    endpoint = f"{url}/models/{MODEL}/inference"
    work = iter(range(len(prompts)))
    failed = 0
    connector = aiohttp.TCPConnector(limit=max(100, concurrency))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(prompt: str) -> bool:
            for attempt in range(1, attempts + 1):
                try:
                    async with session.post(endpoint, json={"inputs": prompt}) as resp:
                        if resp.status == 200:
                            body = await resp.json()
                            if isinstance(body, dict) and "outputs" in body:
                                return True
                        elif resp.status not in (429, 500, 502, 503, 504):
                            return False
                except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
                    pass
                if attempt < attempts:
                    top = delay * 2 ** (attempt - 1)
                    await asyncio.sleep(top / 2 + random.random() * top / 2)
            return False

        async def worker() -> None:
            nonlocal failed
            for i in work:
                failed += not await one(prompts[i])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def _post_faults(url: str, faults: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{url}/_faults", data=json.dumps(faults).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).close()


class _ResetAt:
    """Reset the server's counters ``after`` seconds into a run: what comes after is measured."""

    def __init__(self, server: ServerProcess, after: float) -> None:
        self.timer = threading.Timer(after, server.reset_stats)

    def __enter__(self) -> _ResetAt:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def _refused_share(server: ServerProcess) -> float:
    stats = server.stats()
    sent = stats["inference_requests"]
    return stats["statuses"].get("503", 0) / sent if sent else 0.0


def scenario(
    name: str,
    serve_args: list[str],
    *,
    rows: int,
    contenders: list[tuple[str, str, int | str]],
    attempts: int,
    delay: float,
    outage: tuple[float, float] | None = None,
) -> list[Figures]:
    """Run each contender (``bare`` or ``run``, label, concurrency) against a fresh server."""
    print(
        f"\n{name}: server {' '.join(serve_args)}; {rows} rows, {attempts} attempts, "
        f"retry delay {delay:g} s",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.parquet")
        write_prompts(path, rows)
        prompts = pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()
        for kind, label, concurrency in contenders:
            with ServerProcess(*serve_args) as srv, _ResetAt(srv, 5.0):
                back_at = None
                started = time.perf_counter()
                if outage is not None:
                    _post_faults(srv.url, {"outage_at": outage[0], "outage_s": outage[1]})
                    back_at = time.perf_counter() + outage[0] + outage[1]
                limit = ""
                if kind == "bare":
                    assert isinstance(concurrency, int)
                    failed = asyncio.run(_bare(srv.url, prompts, concurrency, attempts, delay))
                else:
                    summary = run_batch(
                        path,
                        os.path.join(tmp, "out.parquet"),
                        model=MODEL,
                        base_url=srv.url,
                        concurrency=concurrency,
                        max_retries=attempts - 1,
                        retry_delay=delay,
                        progress=False,
                        quiet=True,
                        overwrite=True,
                        max_error_rate=1.0,
                    )
                    failed = summary.error + (rows - summary.ok - summary.error)
                    limit = f"{summary.concurrency_limit} of {summary.concurrency_ceiling}"
                seconds = time.perf_counter() - started
                figures = Figures(label, seconds, rows, failed, limit=limit)
                if seconds > 6.0:
                    figures.refused_after_5s = _refused_share(srv)
                if back_at is not None:
                    figures.done_after_back_s = time.perf_counter() - back_at
                print("  " + figures.line(), flush=True)
                results.append(figures)
    return results


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def flaky() -> None:
    bare, ours = scenario(
        "20% random 503 (5 ms)",
        ["--error-rate", "0.2", "--latency", "0.005"],
        rows=3000,
        contenders=[("bare", "bare loop -c 32", 32), ("run", "llvm-batch run -c 32", 32)],
        attempts=6,
        delay=0.05,
    )
    ratio = ours.seconds / bare.seconds
    print(
        f"  time {ratio:.2f}x the bare loop's (target <= 1.25x) {verdict(ratio <= 1.25)}; "
        f"failed rows {ours.failed} vs {bare.failed} {verdict(ours.failed <= bare.failed)}"
    )
    scenario(
        "20% 503 + 2% resets + 2% broken JSON + 0.5% 429 (2 ms)",
        [
            "--error-rate",
            "0.2",
            "--reset-rate",
            "0.02",
            "--bad-json-rate",
            "0.02",
            "--rate-limit-rate",
            "0.005",
            "--retry-after",
            "0",
            "--latency",
            "0.002",
        ],
        rows=1000,
        contenders=[("bare", "bare loop -c 32", 32), ("run", "llvm-batch run -c 32", 32)],
        attempts=4,
        delay=0.05,
    )


def overload(rows: int) -> None:
    capacity_rate = 16 / 0.02
    results = scenario(
        "capacity 16 at 20 ms (800 rows/s), 503 at once beyond",
        ["--capacity", "16", "--latency", "0.02"],
        rows=rows,
        contenders=[
            ("bare", "bare loop -c 64", 64),
            ("bare", "bare loop -c 16", 16),
            ("run", "llvm-batch run -c 64", 64),
            ("run", "llvm-batch run -c auto", "auto"),
        ],
        attempts=4,
        delay=1.0,
    )
    for figures in results[2:]:
        share = figures.refused_after_5s
        print(
            f"  {figures.name}: {figures.rows_per_s:.0f} rows/s = "
            f"{figures.rows_per_s / capacity_rate * 100:.0f}% of capacity (target >= 80%) "
            f"{verdict(figures.rows_per_s >= 0.8 * capacity_rate)}; 503 after 5 s "
            f"{'n/a' if share is None else f'{share * 100:.2f}%'} (target <= 2%) "
            f"{verdict(share is not None and share <= 0.02)}; failed {figures.failed} "
            f"{verdict(figures.failed == 0)}"
        )


def outage() -> None:
    results = scenario(
        "every answer 503 for 4 s, 3 s into the run (20 ms)",
        ["--latency", "0.02"],
        rows=6000,
        contenders=[("bare", "bare loop -c 32", 32), ("run", "llvm-batch run -c 32", 32)],
        attempts=4,
        delay=1.0,
        outage=(3.0, 4.0),
    )
    ours = results[1]
    after = ours.done_after_back_s or 0.0
    print(
        f"  llvm-batch run: failed {ours.failed} {verdict(ours.failed == 0)}; done "
        f"{after:.2f} s after the server is back (target <= 3 s) {verdict(after <= 3.0)}"
    )
