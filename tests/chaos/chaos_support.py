"""Helpers for the chaos suite: fault handlers for scripted loopback servers, CLI arguments,
checkpoint inspection, and waiting on a run without sleeping for seconds.

Scripted servers (the ``scripted_thread`` fixture of tests/conftest.py) serve model ``m1``; a
handler sees each request and returns a fault, or None for the healthy protocol answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from aiohttp import web
from batch_support import manifest_parts, run_argv

MODEL = "m1"  # the scripted servers' model
REFERENCE_MODEL = "llvm-model-1"  # the reference server's model


def run_args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    """``llvm-batch run`` arguments with fast retries and no progress lines."""
    fast = ("--retry-delay", "0.001", "--no-progress")
    return run_argv(source, url, *fast, *extra, out=out, model=MODEL)


def by_prompt(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["prompt"]: row for row in rows}


def posts(app: Any) -> list[Any]:
    """The inference requests a scripted app saw, in arrival order."""
    return [seen for seen in app.seen if seen.method == "POST"]


# -- faults --------------------------------------------------------------------------------


def status(code: int, message: str = "scripted failure", **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=code, headers=headers or None)


async def hold_until_gone(request: web.Request, seconds: float) -> None:
    """Answer nothing for up to ``seconds``; return early once the client hangs up.

    Returning early keeps server shutdown quick after a client timed out.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.01)


async def trickle(request: web.Request, body: bytes, delay: float) -> web.StreamResponse:
    """A 200 whose body goes out one byte at a time, ``delay`` seconds apart."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    for i in range(len(body)):
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        try:
            await response.write(body[i : i + 1])
        except (ConnectionError, RuntimeError):
            return response
        await asyncio.sleep(delay)
    await response.write_eof()
    return response


async def cut_short(request: web.Request, *, abort: bool) -> web.StreamResponse:
    """Send the headers and part of the body promised by Content-Length, then drop the line.

    ``abort``: reset the connection (RST); otherwise close it cleanly (FIN), leaving a
    truncated body.
    """
    promised = b'{"model_id": "m1", "outputs": "this answer never arrives in full"}'
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(promised)
    await response.prepare(request)
    await response.write(promised[:20])
    transport = request.transport
    if transport is not None:
        if abort:
            transport.abort()
        else:
            transport.close()
    return response


def ok_answer(text: str) -> web.Response:
    return web.json_response({"model_id": MODEL, "outputs": text})


# -- the checkpoint ------------------------------------------------------------------------


def committed_ids(staging: Path) -> list[int]:
    """The ``id`` of every committed row (with repeats, if a row were committed twice)."""
    ids: list[int] = []
    for part in manifest_parts(staging):
        ids += pq.read_table(staging / part["file"], columns=["id"]).column("id").to_pylist()
    return ids


def assert_checkpoint_sound(staging: Path) -> int:
    """The manifest parses, every part it lists is readable with the rows it claims, and no
    row is committed twice; returns the committed row count."""
    manifest = json.loads((staging / "manifest.json").read_text())
    for part in manifest["parts"]:
        table = pq.read_table(staging / part["file"])
        assert table.num_rows == part["rows"], part
    ids = committed_ids(staging)
    assert len(ids) == len(set(ids)), "a row was committed twice"
    return len(ids)
