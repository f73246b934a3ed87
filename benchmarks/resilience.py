#!/usr/bin/env python
"""Latency hiding and a soak run of ``run_batch`` against the reference server (a subprocess).

    python benchmarks/resilience.py latency [--rows 6400] [--latency 0.1] [--concurrency 64]
        rows/s against a server that takes --latency seconds per request, as a fraction of the
        ideal concurrency / latency (640 rows/s for 64 and 100 ms); target >= 0.9.
    python benchmarks/resilience.py soak [--minutes 10] [--rows 20000]
        back-to-back runs at moderate fault rates (5% 503, 2% 429, 1% resets, 1% bad JSON)
        for --minutes, checking after each that every row is present exactly once and that
        every ok row holds the right answer; target: zero lost, duplicated or wrong rows.

    python benchmarks/resilience.py overload [--rows 8000]
        a server that holds 16 requests (20 ms each, 800 rows/s) and answers 503 at once beyond:
        bare loops at -c 64 and -c 16, llvm-batch at -c 64 and -c auto; targets >= 80% of the
        capacity, <= 2% of requests answered 503 after the first 5 s, 0 failed rows.
    python benchmarks/resilience.py flaky
        20% random 503 (5 ms, 3,000 rows, -c 32, 6 attempts): time <= 1.25x the bare loop's
        with no more failed rows; then the same plus resets, broken JSON and 429s (figures).
    python benchmarks/resilience.py outage
        every answer 503 for 4 s, 3 s into a 6,000-row run (20 ms, -c 32): 0 failed rows,
        done <= 3 s after the server is back.
    python benchmarks/resilience.py all
        flaky, overload and outage in one run.

Only 127.0.0.1 is used. It is a benchmark: it prints figures and PASS/FAIL and exits 0
unless something crashed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import overload as scenarios  # noqa: E402
from support import MODEL, ServerProcess, write_prompts  # noqa: E402

from llvm_batch.batch import run_batch  # noqa: E402
from llvm_batch.server import reference_output  # noqa: E402


def _server(srv: ServerProcess, args: argparse.Namespace) -> dict[str, str]:
    """run_batch's base_url and protocol: the reference server speaks OpenAI under /v1."""
    root = srv.url + ("/v1" if args.protocol == "openai" else "")
    return {"base_url": root, "protocol": args.protocol}


def latency(args: argparse.Namespace) -> None:
    ideal = args.concurrency / args.latency
    with tempfile.TemporaryDirectory() as tmp, ServerProcess("--latency", str(args.latency)) as srv:
        path = os.path.join(tmp, "in.parquet")
        write_prompts(path, args.rows)
        started = time.perf_counter()
        summary = run_batch(
            path,
            os.path.join(tmp, "out.parquet"),
            model=MODEL,
            **_server(srv, args),
            concurrency=args.concurrency,
            progress=False,
        )
        elapsed = time.perf_counter() - started
    rate = args.rows / elapsed
    print(
        f"latency hiding: {args.rows} rows, server latency {args.latency * 1000:.0f} ms, "
        f"concurrency {args.concurrency}, protocol {args.protocol}"
    )
    print(
        f"  {rate:.0f} rows/s of an ideal {ideal:.0f} = {rate / ideal:.3f}  "
        f"target >= 0.90  {'PASS' if rate / ideal >= 0.9 else 'FAIL'}  (ok {summary.ok})"
    )


def soak(args: argparse.Namespace) -> None:
    faults = [
        "--error-rate",
        "0.05",
        "--rate-limit-rate",
        "0.02",
        "--retry-after",
        "0",
        "--reset-rate",
        "0.01",
        "--bad-json-rate",
        "0.01",
    ]
    deadline = time.monotonic() + args.minutes * 60
    totals: Counter[str] = Counter()
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.parquet")
        write_prompts(path, args.rows)
        prompts = pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()
        while time.monotonic() < deadline:
            seed = str(runs)
            with ServerProcess(*faults, "--seed", seed) as srv:
                out = os.path.join(tmp, "out.parquet")
                summary = run_batch(
                    path,
                    out,
                    model=MODEL,
                    **_server(srv, args),
                    concurrency=32,
                    retry_delay=0.05,
                    max_retries=5,
                    progress=False,
                    overwrite=True,
                    max_error_rate=1.0,
                )
                sent = srv.stats()["inference_requests"]
            table = pq.read_table(
                out, columns=["id", "llvm_status", "llvm_output", "llvm_attempts"]
            )
            ids = table.column("id").to_pylist()
            totals["rows"] += len(ids)
            totals["lost"] += args.rows - len(set(ids))
            totals["duplicated"] += len(ids) - len(set(ids))
            totals["out_of_order"] += ids != sorted(ids)
            for row in table.to_pylist():
                totals[row["llvm_status"]] += 1
                if row["llvm_status"] == "ok" and row["llvm_output"] != reference_output(
                    MODEL, prompts[row["id"]]
                ):
                    totals["wrong"] += 1
            totals["attempts"] += sum(table.column("llvm_attempts").to_pylist())
            totals["requests_seen_by_server"] += sent
            runs += 1
            print(
                f"  run {runs}: {summary.ok} ok, {summary.error} error, "
                f"{summary.retries} retries, {summary.rows_per_s} rows/s",
                flush=True,
            )
    bad = totals["lost"] + totals["duplicated"] + totals["wrong"] + totals["out_of_order"]
    print(f"soak: {args.minutes:g} min, {runs} runs, {totals['rows']} rows")
    for key in (
        "ok",
        "error",
        "lost",
        "duplicated",
        "wrong",
        "out_of_order",
        "attempts",
        "requests_seen_by_server",
    ):
        print(f"  {key:24s} {totals[key]}")
    print(
        f"  zero lost / duplicated / wrong rows: {'PASS' if bad == 0 else 'FAIL'}; "
        f"attempts recorded == requests seen: "
        f"{'PASS' if totals['attempts'] == totals['requests_seen_by_server'] else 'FAIL'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["llvm", "openai"], default="llvm")
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--rows", type=int, default=6400)
    lat.add_argument("--latency", type=float, default=0.1)
    lat.add_argument("--concurrency", type=int, default=64)
    soak_args = sub.add_parser("soak")
    soak_args.add_argument("--minutes", type=float, default=10.0)
    soak_args.add_argument("--rows", type=int, default=20000)
    over = sub.add_parser("overload")
    over.add_argument("--rows", type=int, default=8000)
    sub.add_parser("flaky")
    sub.add_parser("outage")
    every = sub.add_parser("all")
    every.add_argument("--rows", type=int, default=8000)
    args = parser.parse_args()
    if args.what == "latency":
        latency(args)
    elif args.what == "soak":
        soak(args)
    if args.what in ("flaky", "all"):
        scenarios.flaky()
    if args.what in ("overload", "all"):
        scenarios.overload(args.rows)
    if args.what in ("outage", "all"):
        scenarios.outage()
    return 0


if __name__ == "__main__":
    sys.exit(main())
