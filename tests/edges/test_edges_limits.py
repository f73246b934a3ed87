"""Bounded memory and clear limits: answers are read with a size cap (a row error beyond it),
and option values that are no number (inf, nan) are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest
from aiohttp import web
from batch_support import invoke, read_rows, write_parquet
from chaos_support import MODEL, by_prompt, posts, run_args

from llvm_batch import AsyncLLVMClient, ResponseTooLargeError, run_batch
from llvm_batch.errors import InputError
from llvm_batch.server import reference_output

CAP = 64 * 1024


async def endless(request: web.Request) -> web.StreamResponse:
    """A 200 whose JSON body never ends (until the client hangs up)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"model_id": "m1", "outputs": "')
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        try:
            await response.write(b"x" * 8192)
        except (ConnectionError, RuntimeError):
            return response
        await asyncio.sleep(0)


def huge(seen, request):
    return web.json_response({"model_id": "m1", "outputs": "y" * (CAP * 2)})


@pytest.mark.parametrize("fault", [endless, huge], ids=["endless", "huge"])
def test_an_answer_beyond_the_cap_fails_its_row_only(tmp_path: Path, scripted_thread, fault):
    def handler(seen, request):
        if seen.inputs == "big":
            return fault(request) if fault is endless else fault(seen, request)
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["a", "big", "b"]}))
    out = tmp_path / "out.parquet"

    result = invoke(*run_args(source, out, app.url, "--max-response-mb", str(CAP / 2**20)))

    assert result.exit_code == 1, result.output
    rows = by_prompt(read_rows(out))
    big = rows["big"]
    assert big["llvm_status"] == "error" and big["llvm_error_type"] == "response_too_large"
    assert "larger than max_response_bytes (65536 bytes)" in big["llvm_error"]
    assert big["llvm_attempts"] == 1 and big["llvm_http_status"] == 200  # not retried
    assert rows["a"]["llvm_output"] == reference_output(MODEL, "a")
    assert len(posts(app)) == 3


def test_the_client_caps_what_it_reads(scripted) -> None:
    async def scenario() -> None:
        async with scripted(lambda seen, request: endless(request) if seen.inputs else None) as app:
            async with AsyncLLVMClient(app.url, max_response_bytes=CAP, max_retries=3) as client:
                with pytest.raises(ResponseTooLargeError) as caught:
                    await client.run_inference(MODEL, "go")
                assert caught.value.error_type == "response_too_large"
                assert len(posts(app)) == 1  # not retried: the same answer would come back
                assert await client.model_ids() == ["m1", "m2"]  # the client still works

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_a_bad_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_response_bytes must be a positive integer"):
        AsyncLLVMClient("http://127.0.0.1:9", max_response_bytes=0)


@pytest.mark.parametrize(
    "flag", ["--temperature", "--top-p", "--retry-delay", "--timeout", "--max-rps",
             "--max-outage", "--flush-interval", "--progress-interval", "--max-response-mb"],
)  # fmt: skip
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_option_exits_2_sending_nothing(tmp_path: Path, server, flag, value):
    source = write_parquet(tmp_path / "in.parquet", pa.table({"prompt": ["a"]}))
    out = tmp_path / "out.parquet"

    result = invoke(
        "run", str(source), "-o", str(out), "-m", "llvm-model-1", "--base-url", server.url,
        flag, value,
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    assert server.stats.requests == 0 and not out.exists()


def test_run_batch_refuses_non_finite_values(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="temperature must be a finite number; got nan"):
        run_batch(tmp_path / "x.parquet", temperature=float("nan"))
