#!/usr/bin/env python
"""Throughput and peak-memory benchmark of the batch runner against the reference server.

One run of this script:

1. writes a Parquet file of ``--rows`` realistic prompts (``id``, ``prompt``, ``category``);
2. starts ONE reference server as a subprocess (``python -m llvm_batch.cli serve``) on
   127.0.0.1 and a free port, pinned to a core of its own (this process gets the others);
3. measures a minimal bare-aiohttp loop over the same prompts (one session, ``concurrency``
   workers, no retries, no checkpointing) -- the ceiling a Python client can reach here;
4. measures ``llvm_batch.batch.run_batch`` on the same file and server, and checks the output;
5. alternates the two ``--repeat`` times and keeps the best of each (a shared machine only
   ever slows a run down), and shows the median ratio of each pair beside it;
6. prints rows/s for both and the ratio runner/bare against the target (>= 0.80);
7. runs ``run_batch`` in a child process on ``--memory-rows`` rows (and on 100,000) and
   reports the child's peak RSS (VmHWM) (target: < 400 MB for 1M rows, and flat in
   the row count).

It is a benchmark, not a test: it exits 0 unless something crashed, and prints PASS/FAIL lines.

    python benchmarks/throughput.py [--rows 100000] [--concurrency 32] [--repeat 5]
                                    [--memory-rows 1000000] [--skip-memory] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import MODEL, ServerProcess, check_output, pin_cores, write_prompts  # noqa: E402

TARGET_RATIO = 0.80
TARGET_PEAK_MB = 400.0
SMALL_MEMORY_ROWS = 100_000
#: "Flat in the row count": the big run may use at most this much more than the small one.
FLAT_TOLERANCE_MB = 50.0

# -- the two contenders ------------------------------------------------------------------


async def _bare(path: str, url: str, concurrency: int) -> list[Any]:
    import aiohttp

    prompts = pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()
    outputs: list[Any] = [None] * len(prompts)
    endpoint = f"{url}/models/{MODEL}/inference"
    work = iter(enumerate(prompts))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i, prompt in work:
                async with session.post(endpoint, json={"inputs": prompt}) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                outputs[i] = body["outputs"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outputs


def run_bare(path: str, url: str, concurrency: int, rows: int) -> float:
    """The bare aiohttp loop; returns its wall time in seconds (checks every row came back)."""
    started = time.perf_counter()
    outputs = asyncio.run(_bare(path, url, concurrency))
    elapsed = time.perf_counter() - started
    missing = sum(o is None for o in outputs)
    if len(outputs) != rows or missing:
        raise RuntimeError(f"bare loop: {len(outputs)} outputs, {missing} missing (want {rows})")
    return elapsed


def run_runner(path: str, out: str, url: str, concurrency: int, rows: int) -> float:
    """``run_batch`` on the file; returns its wall time in seconds (checks the output)."""
    from llvm_batch.batch import run_batch

    started = time.perf_counter()
    summary = run_batch(
        path,
        out,
        model=MODEL,
        base_url=url,
        concurrency=concurrency,
        progress=False,
        quiet=True,
        overwrite=True,
    )
    elapsed = time.perf_counter() - started
    check_output(out, rows, summary)
    return elapsed


def timed(server: ServerProcess, rows: int, fn: Any, *fn_args: Any) -> dict[str, Any]:
    """Run ``fn``: its wall time, and the CPU per row of this process and of the server.

    CPU per row is much less sensitive than wall time to other processes on a shared machine.
    """
    server.reset_stats()
    cpu0, server0 = os.times(), server.cpu_seconds()
    wall = fn(*fn_args)
    cpu1, server1 = os.times(), server.cpu_seconds()
    client_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    server_cpu = None if server0 is None or server1 is None else server1 - server0
    return {
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "client_cpu_us_per_row": client_cpu / rows * 1e6,
        "server_cpu_us_per_row": None if server_cpu is None else server_cpu / rows * 1e6,
    }


def _cpu_text(run: dict[str, Any]) -> str:
    server = run["server_cpu_us_per_row"]
    server_text = "?" if server is None else f"{server:.0f}"
    return f"client CPU {run['client_cpu_us_per_row']:4.0f} us/row, server CPU {server_text} us/row"


# -- peak memory in a child process ------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``); None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB.

    ``VmHWM`` first: ``ru_maxrss`` of a process started with fork/vfork + exec (as
    ``subprocess`` does) folds in the *parent's* peak RSS from before the exec, so it reports
    the benchmark parent's memory (the generated 1M-row table...) rather than the child's.
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes there, KiB on Linux


def child_memory(args: argparse.Namespace) -> int:
    """Hidden ``--child-memory`` mode: one run_batch, then print the peak RSS as JSON."""
    from llvm_batch.batch import run_batch

    baseline = _proc_status_kib("VmRSS") or 0
    started = time.perf_counter()
    summary = run_batch(
        args.child_input,
        args.child_output,
        model=MODEL,
        base_url=args.child_url,
        concurrency=args.concurrency,
        progress=False,
        quiet=True,
        overwrite=True,
    )
    elapsed = time.perf_counter() - started
    peak = _peak_rss_kib()
    result = {
        "rows": summary.rows,
        "ok": summary.ok,
        "status": summary.status,
        "elapsed_s": elapsed,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print("CHILD-RESULT " + json.dumps(result), flush=True)
    return 0


def measure_memory(tmp: str, server: ServerProcess, rows: int, concurrency: int) -> dict[str, Any]:
    path = os.path.join(tmp, f"mem_{rows}.parquet")
    out = os.path.join(tmp, f"mem_{rows}.out.parquet")
    t0 = time.perf_counter()
    write_prompts(path, rows)
    gen_s = time.perf_counter() - t0
    server.reset_stats()
    cmd = [sys.executable, os.path.abspath(__file__), "--child-memory"]
    cmd += ["--child-input", path, "--child-output", out, "--child-url", server.url]
    cmd += ["--concurrency", str(concurrency)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory child for {rows} rows failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    check_output(out, rows)
    os.remove(out)
    os.remove(path)
    result["generate_s"] = gen_s
    result["peak_rss_mb"] = result["peak_rss_kib"] / 1024
    result["baseline_rss_mb"] = result["baseline_rss_kib"] / 1024
    result["rows_per_s"] = rows / result["elapsed_s"] if result["elapsed_s"] else 0.0
    return result


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the throughput file")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs of each; best kept")
    parser.add_argument(
        "--memory-rows", type=int, default=1_000_000, help="rows of the big memory run"
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--skip-throughput", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-input", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.concurrency < 1 or args.repeat < 1 or args.memory_rows < 1:
        parser.error("--rows, --concurrency, --repeat and --memory-rows must be positive")
    return args


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def pass_fail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_memory:
        return child_memory(args)

    import aiohttp

    import llvm_batch

    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pyarrow": pa.__version__,
        "aiohttp": aiohttp.__version__,
        "llvm_batch": getattr(llvm_batch, "__version__", "?"),
        "rows": args.rows,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
    }
    print(
        f"llvm-batch throughput benchmark: Python {figures['python']}, {figures['cpus']} CPUs, "
        f"pyarrow {figures['pyarrow']}, aiohttp {figures['aiohttp']}",
        flush=True,
    )
    lines: list[str] = []
    total_started = time.perf_counter()
    load_start = _loadavg()
    if load_start is not None:
        print(
            f"load average at start {load_start:.2f} on {figures['cpus']} CPUs"
            + (
                "  (other work on this machine: expect noisy wall-clock figures)"
                if load_start > 0.5
                else ""
            ),
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="llvm-batch-bench-") as tmp, ServerProcess() as server:
        pid = server.proc.pid if server.proc is not None else "?"
        figures["placement"] = pin_cores(server)
        print(f"reference server (subprocess pid {pid}) on {server.url}", flush=True)
        print(figures["placement"], flush=True)
        if not args.skip_throughput:
            path = os.path.join(tmp, "prompts.parquet")
            out = os.path.join(tmp, "prompts.llvm.parquet")
            t0 = time.perf_counter()
            info = write_prompts(path, args.rows)
            figures["input"] = {**info, "generate_s": round(time.perf_counter() - t0, 3)}
            print(
                f"input: {args.rows:,} rows, {info['bytes'] / 1e6:.1f} MB parquet, prompts "
                f"{info['prompt_len_min']}-{info['prompt_len_max']} chars "
                f"(mean {info['prompt_len_mean']}), "
                f"generated in {figures['input']['generate_s']:.2f} s",
                flush=True,
            )
            # a short warm-up of both paths (imports, connection set-up, server JIT-free warm)
            warm = os.path.join(tmp, "warm.parquet")
            write_prompts(warm, min(2000, args.rows))
            run_bare(warm, server.url, args.concurrency, min(2000, args.rows))
            run_runner(
                warm, warm + ".out.parquet", server.url, args.concurrency, min(2000, args.rows)
            )

            bare_runs: list[dict[str, Any]] = []
            runner_runs: list[dict[str, Any]] = []
            for i in range(args.repeat):
                bare_runs.append(
                    timed(
                        server, args.rows, run_bare, path, server.url, args.concurrency, args.rows
                    )
                )
                print(
                    f"  run {i + 1}/{args.repeat} bare:   {bare_runs[-1]['wall_s']:7.2f} s  "
                    f"{bare_runs[-1]['rows_per_s']:8.0f} rows/s  ({_cpu_text(bare_runs[-1])})",
                    flush=True,
                )
                runner_runs.append(
                    timed(
                        server,
                        args.rows,
                        run_runner,
                        path,
                        out,
                        server.url,
                        args.concurrency,
                        args.rows,
                    )
                )
                print(
                    f"  run {i + 1}/{args.repeat} runner: {runner_runs[-1]['wall_s']:7.2f} s  "
                    f"{runner_runs[-1]['rows_per_s']:8.0f} rows/s  ({_cpu_text(runner_runs[-1])})",
                    flush=True,
                )
            bare_rps = max(r["rows_per_s"] for r in bare_runs)
            runner_rps = max(r["rows_per_s"] for r in runner_runs)
            ratio = runner_rps / bare_rps
            # Each runner run against the bare run just before it: the spread shows the noise.
            pairs = sorted(
                r["rows_per_s"] / b["rows_per_s"]
                for b, r in zip(bare_runs, runner_runs, strict=True)
            )
            pair_median = pairs[len(pairs) // 2]
            bare_cpu = min(r["client_cpu_us_per_row"] for r in bare_runs)
            runner_cpu = min(r["client_cpu_us_per_row"] for r in runner_runs)
            cpu_ratio = bare_cpu / runner_cpu
            figures["throughput"] = {
                "bare_runs": bare_runs,
                "runner_runs": runner_runs,
                "bare_rows_per_s": bare_rps,
                "runner_rows_per_s": runner_rps,
                "ratio": ratio,
                "pair_ratios": pairs,
                "pair_ratio_median": pair_median,
                "target_ratio": TARGET_RATIO,
                "pass": ratio >= TARGET_RATIO,
                "bare_client_cpu_us_per_row": bare_cpu,
                "runner_client_cpu_us_per_row": runner_cpu,
                "cpu_ratio": cpu_ratio,
            }
            lines += [
                "",
                f"throughput (best of {args.repeat} alternating runs each)",
                f"  {'rows':<28}{args.rows:>12,}",
                f"  {'concurrency':<28}{args.concurrency:>12}",
                f"  {'bare aiohttp rows/s':<28}{bare_rps:>12,.0f}",
                f"  {'run_batch rows/s':<28}{runner_rps:>12,.0f}",
                f"  {'ratio runner/bare':<28}{ratio:>12.3f}   target >= {TARGET_RATIO:.2f}   "
                f"{pass_fail(ratio >= TARGET_RATIO)}",
                f"  {'ratio of each pair':<28}{pair_median:>12.3f}   (median; range "
                f"{pairs[0]:.3f}-{pairs[-1]:.3f}: the machine's noise)",
                f"  {'client CPU us/row bare':<28}{bare_cpu:>12.0f}   (lowest; informational)",
                f"  {'client CPU us/row runner':<28}{runner_cpu:>12.0f}",
                f"  {'CPU efficiency bare/runner':<28}{cpu_ratio:>12.3f}   "
                "(the ratio to expect when the client's core is the bottleneck)",
            ]

        if not args.skip_memory:
            sizes = sorted({min(SMALL_MEMORY_ROWS, args.memory_rows), args.memory_rows})
            memory: dict[str, Any] = {}
            for rows in sizes:
                print(f"memory: run_batch in a child process on {rows:,} rows ...", flush=True)
                result = measure_memory(tmp, server, rows, args.concurrency)
                memory[str(rows)] = result
                print(
                    f"  {rows:,} rows: peak RSS {result['peak_rss_mb']:.1f} MB "
                    f"(after imports {result['baseline_rss_mb']:.1f} MB), "
                    f"{result['elapsed_s']:.1f} s, {result['rows_per_s']:.0f} rows/s",
                    flush=True,
                )
            small = memory[str(sizes[0])]
            big = memory[str(sizes[-1])]
            under = big["peak_rss_mb"] < TARGET_PEAK_MB
            growth = big["peak_rss_mb"] - small["peak_rss_mb"]
            flat = growth <= FLAT_TOLERANCE_MB
            figures["memory"] = {
                "runs": memory,
                "target_peak_mb": TARGET_PEAK_MB,
                "growth_mb": growth,
                "flat_tolerance_mb": FLAT_TOLERANCE_MB,
                "pass_peak": under,
                "pass_flat": flat,
            }
            lines += ["", "peak memory of run_batch (child process, peak RSS = VmHWM)"]
            for rows in sizes:
                r = memory[str(rows)]
                lines.append(f"  {f'{rows:,} rows':<28}{r['peak_rss_mb']:>9.1f} MB")
            lines += [
                f"  {f'peak at {sizes[-1]:,} rows':<28}{big['peak_rss_mb']:>9.1f} MB   "
                f"target < {TARGET_PEAK_MB:.0f} MB   {pass_fail(under)}",
                f"  {'growth small -> big':<28}{growth:>+9.1f} MB   "
                f"target: flat (<= +{FLAT_TOLERANCE_MB:.0f} MB)   {pass_fail(flat)}",
            ]
    figures["total_s"] = time.perf_counter() - total_started
    figures["loadavg_start"], figures["loadavg_end"] = load_start, _loadavg()
    lines += ["", f"total benchmark time {figures['total_s']:.0f} s"]
    if load_start is not None:
        end = figures["loadavg_end"]
        lines[-1] += f"; 1-min load average {load_start:.2f} at start, {end:.2f} at end"
    print("\n".join(lines), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
