"""What the benchmarks share: a realistic prompt file, the reference server as a subprocess
pinned to a core of its own, and a check of run_batch's output. Loopback only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MODEL = "llvm-model-1"
HOST = "127.0.0.1"  # loopback only, never any other address


# -- prompt generation -------------------------------------------------------------------

CATEGORIES = ["summarize", "translate", "classify", "extract", "rewrite", "qa", "code"]
OPENERS = {
    "summarize": [
        "Summarize in two sentences the following",
        "Give a short summary of this",
        "Write a one-paragraph abstract of the",
    ],
    "translate": [
        "Translate into French the following",
        "Render in plain German this",
        "Translate into Spanish this",
    ],
    "classify": [
        "Classify the sentiment of this",
        "Label the topic of the following",
        "Decide whether this is spam or not:",
    ],
    "extract": [
        "List every date and amount mentioned in this",
        "Extract the company names from the following",
        "Pull out the action items from this",
    ],
    "rewrite": [
        "Rewrite in a friendlier tone the following",
        "Make this shorter and clearer:",
        "Fix the grammar and spelling of this",
    ],
    "qa": [
        "Answer a question about this",
        "What is the main point of the following",
        "Who is responsible, according to this",
    ],
    "code": [
        "Explain line by line this",
        "Find the bug in the following",
        "Write unit tests for this",
    ],
}
SUBJECTS = [
    "support ticket about a late delivery",
    "quarterly earnings call transcript excerpt",
    "review of a noise-cancelling headset",
    "internal memo on the new travel policy",
    "news article on regional rail investment",
    "email thread about the Q3 marketing budget",
    "bug report for the mobile checkout flow",
    "meeting notes from the platform team sync",
    "research abstract on protein folding",
    "contract clause on early termination fees",
    "function that parses ISO-8601 timestamps",
    "forum post asking about router firmware",
]
SUFFIXES = [
    "Keep it under 50 words.",
    "Use bullet points.",
    "Reply in JSON.",
    "Be precise and neutral.",
    "Mention any uncertainty.",
    "",
]


def make_table(rows: int, seed: int = 7) -> pa.Table:
    """``rows`` prompts of ~60-120 characters, built column-wise (no per-row Python)."""
    rng = np.random.default_rng(seed)
    cat_idx = rng.integers(0, len(CATEGORIES), rows)
    opener_pick = rng.integers(0, 3, rows)
    openers = pa.array([o for c in CATEGORIES for o in OPENERS[c]])
    opener = pc.take(openers, pa.array(cat_idx * 3 + opener_pick))
    subject = pc.take(pa.array(SUBJECTS), pa.array(rng.integers(0, len(SUBJECTS), rows)))
    suffix = pc.take(pa.array(SUFFIXES), pa.array(rng.integers(0, len(SUFFIXES), rows)))
    ids = pa.array(np.arange(rows, dtype=np.int64))
    ref = pc.binary_join_element_wise("#", pc.cast(ids, pa.string()), "")
    prompt = pc.binary_join_element_wise(opener, subject, ref, suffix, " ")
    prompt = pc.utf8_trim_whitespace(prompt)
    category = pc.take(pa.array(CATEGORIES), pa.array(cat_idx))
    return pa.table({"id": ids, "prompt": prompt, "category": category})


def write_prompts(path: str, rows: int) -> dict[str, Any]:
    table = make_table(rows)
    pq.write_table(table, path, row_group_size=64 * 1024)
    lengths = pc.utf8_length(table.column("prompt"))
    return {
        "rows": rows,
        "bytes": os.path.getsize(path),
        "prompt_len_min": pc.min(lengths).as_py() if rows else 0,
        "prompt_len_max": pc.max(lengths).as_py() if rows else 0,
        "prompt_len_mean": round(pc.mean(lengths).as_py(), 1) if rows else 0,
    }


# -- the reference server, as a subprocess -----------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m llvm_batch.cli serve`` on 127.0.0.1 and a free port."""

    def __init__(self, *serve_args: str) -> None:
        self.serve_args = list(serve_args)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "llvm_batch.cli", "serve", "--host", HOST]
        cmd += ["--port", str(self.port), *self.serve_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {err}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=1) as resp:
                    if MODEL in json.load(resp).get("models", []):
                        return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not answer on {self.url} in {timeout:.0f} s")
            time.sleep(0.1)

    def _post(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.url}{path}", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.load(resp))

    def reset_stats(self) -> None:
        self._post("/_stats/reset")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as resp:
            return dict(json.load(resp))

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the server process has used so far; None off Linux."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pin_cores(server: ServerProcess) -> str:
    """Server on the last CPU, this process on the others: the two stop trading cores.

    Wall-clock figures on a small shared machine vary less this way; both contenders of a
    comparison get the same placement. Returns what was done, for the report.
    """
    if not hasattr(os, "sched_setaffinity") or server.proc is None:
        return "not pinned (no sched_setaffinity here)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(server.proc.pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return f"server pinned to CPU {cpus[-1]}, client to CPU {','.join(map(str, cpus[:-1]))}"


def check_output(out: str, rows: int, summary: Any = None) -> None:
    status = pq.read_table(out, columns=["llvm_status"]).column("llvm_status")
    ok = pc.sum(pc.equal(status, "ok")).as_py() or 0
    if len(status) != rows or ok != rows:
        counts = pc.value_counts(status).to_pylist()
        raise RuntimeError(
            f"run_batch output {out}: {len(status)} rows, {ok} ok (want {rows}); "
            f"statuses {counts}; summary {summary!r}"
        )
