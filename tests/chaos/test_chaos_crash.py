"""Crashes: kill -9 at random points (repeatedly, with resumes in between), a crash between a
part and its manifest entry, and an input changed under a checkpoint.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_support import (
    cli_command,
    committed_rows,
    comparable,
    invoke,
    manifest_parts,
    prompts_table,
    read_rows,
    staging_of,
    wait_until,
    write_parquet,
)
from chaos_support import (
    REFERENCE_MODEL,
    assert_checkpoint_sound,
    committed_ids,
    hold_until_gone,
    posts,
    run_args,
)

from llvm_batch.batch import run_batch
from llvm_batch.server import Faults, ServerThread, reference_output

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

ROWS = 300


def cli_args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        REFERENCE_MODEL,
        "--base-url",
        url,
        "--flush-interval",
        "0.05",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> Callable[[str], tuple[Path, list[dict]]]:
    """An input, and for a protocol the rows of its uninterrupted run (made once each)."""
    where = tmp_path_factory.mktemp("reference")
    source = write_parquet(where / "in.parquet", prompts_table(ROWS, empty_every=11))
    runs: dict[str, list[dict]] = {}

    def run(protocol: str) -> tuple[Path, list[dict]]:
        if protocol not in runs:
            out = where / f"expected-{protocol}.parquet"
            with ServerThread(host="127.0.0.1", port=0, protocol=protocol) as server:
                summary = run_batch(
                    source, out, model=REFERENCE_MODEL, base_url=server.url, protocol=protocol
                )
            assert summary.exit_code == 0
            runs[protocol] = read_rows(out)
        return source, runs[protocol]

    return run


@pytest.fixture
def reference_run(reference_runs, protocol: str) -> tuple[Path, list[dict]]:
    return reference_runs(protocol)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Three kill -9 seeds by default, twenty-five with ``pytest --long``."""
    if "seed" in metafunc.fixturenames:
        seeds = LONG_SEEDS if metafunc.config.getoption("long") else DEFAULT_SEEDS
        metafunc.parametrize("seed", range(1, seeds + 1))


DEFAULT_SEEDS = 3
LONG_SEEDS = 25


def test_kill_9_at_random_points_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, make_server, reference_run, seed: int
) -> None:
    rng = random.Random(seed)
    source, expected = reference_run
    server = make_server(faults=Faults(latency=0.01))
    out = tmp_path / "out.parquet"
    staging = staging_of(out)
    kills = 0
    for _ in range(2):  # kill, resume and kill again, then resume to the end
        # A resumed checkpoint keeps its first chunk size, whatever later runs ask for.
        chunk = rng.choice(["7", "20", "50"])
        concurrency = rng.choice(["2", "4", "8"])
        args = cli_args(source, out, server.url, "--chunk-size", chunk, "-c", concurrency)
        before = committed_rows(staging)
        if before >= ROWS - 100:
            break  # too little left to land a kill before the run ends
        target = min(before + rng.randint(1, 120), ROWS - 80)
        proc = subprocess.Popen(
            cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_until(
                lambda: committed_rows(staging) >= target or proc.poll() is not None,  # noqa: B023
                "commits to kill at",
            )
            time.sleep(rng.uniform(0, 0.03))  # land anywhere: mid-request, mid-commit...
            proc.send_signal(signal.SIGKILL)
        finally:
            _, stderr = proc.communicate(timeout=30)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            assert not out.exists()
            assert_checkpoint_sound(staging)
        else:
            assert proc.returncode == 0, stderr  # finished before the kill landed
            break
    assert kills >= 1, "every run finished before it could be killed"
    assert_checkpoint_sound(staging)

    done = set(committed_ids(staging))
    sent_before = server.stats.inference_requests
    result = invoke(*cli_args(source, out, server.url))

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(ROWS))  # none lost, none twice
    assert comparable(rows) == comparable(expected)
    assert f"resumed {len(done)}" in result.output
    assert not staging.exists()
    # The final run sent exactly the rows not committed before it, and a row's idempotency
    # key is the same in every run.
    sendable = {r["id"] for r in rows if r["llvm_status"] != "skipped"}
    assert server.stats.inference_requests - sent_before == len(sendable - done)
    assert len(server.stats.keys) == len(sendable)


def test_a_crash_between_part_and_manifest_is_cleaned_up_on_resume(
    tmp_path: Path, make_server
) -> None:
    source = write_parquet(tmp_path / "in.parquet", prompts_table(100))
    out = tmp_path / "out.parquet"
    staging = staging_of(out)
    server = make_server(faults=Faults(latency=0.005))
    # A partial checkpoint: kill -9 the run after its first commits.
    args = cli_args(source, out, server.url, "--chunk-size", "10", "-c", "1")
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: committed_rows(staging) >= 30 or proc.poll() is not None, "commits")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    listed = manifest_parts(staging)
    done = set(committed_ids(staging))
    chunks_listed = {p["chunk"] for p in listed}
    first_unlisted_chunk = max(chunks_listed) + 1
    assert first_unlisted_chunk * 10 < 100

    # What a crash between "part renamed into place" and "manifest replaced" leaves behind,
    # poisoned so that any of it reaching the output shows:
    template = pq.read_table(staging / listed[0]["file"])
    n = min(10, template.num_rows)
    rows = pa.array(range(first_unlisted_chunk * 10, first_unlisted_chunk * 10 + n), pa.int64())
    poison = template.slice(0, n).set_column(
        template.schema.get_field_index("__llvm_row"), "__llvm_row", rows
    )
    poison = poison.set_column(
        poison.schema.get_field_index("llvm_output"), "llvm_output", pa.array(["POISON"] * n)
    )
    orphan = staging / f"part-{first_unlisted_chunk:08d}-0000.parquet"  # the name resume wants
    pq.write_table(poison, orphan)
    (staging / f".part-{first_unlisted_chunk + 1:08d}-0000.parquet.tmp-99999").write_bytes(
        b"PAR1 half a part"
    )
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["parts"].append({"file": orphan.name, "chunk": first_unlisted_chunk, "rows": n})
    (staging / ".manifest.json.tmp-99999").write_text(json.dumps(manifest)[:-7])  # cut short
    sent_before = server.stats.inference_requests

    result = invoke(*args)

    assert result.exit_code == 0, result.output
    final = read_rows(out)
    assert [r["id"] for r in final] == list(range(100))
    assert "POISON" not in {r["llvm_output"] for r in final}
    assert all(r["llvm_output"] == reference_output(REFERENCE_MODEL, r["prompt"]) for r in final)
    assert server.stats.inference_requests - sent_before == 100 - len(done)
    assert not staging.exists()


def test_input_changed_after_a_crash_refuses_to_resume_then_overwrite_starts_over(
    tmp_path: Path, make_server
) -> None:
    table = prompts_table(200)
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out.parquet"
    staging = staging_of(out)
    server = make_server(faults=Faults(latency=0.005))
    args = cli_args(source, out, server.url, "--chunk-size", "10", "-c", "2")
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: committed_rows(staging) >= 20 or proc.poll() is not None, "commits")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    manifest_before = (staging / "manifest.json").read_bytes()
    parts_before = sorted(p.name for p in staging.iterdir())

    # Same size, same schema, one prompt changed.
    prompts = table.column("prompt").to_pylist()
    prompts[150] = "question X50"
    write_parquet(source, table.set_column(1, "prompt", pa.array(prompts)))
    sent_before = server.stats.inference_requests

    result = invoke(*args)

    assert result.exit_code == 2, result.output
    assert "different input" in result.output and "--overwrite" in result.output
    assert server.stats.inference_requests == sent_before
    assert (staging / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in staging.iterdir()) == parts_before
    assert not out.exists()

    result = invoke(*args, "--overwrite")

    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["id"] for r in rows] == list(range(200))
    assert rows[150]["llvm_output"] == reference_output(REFERENCE_MODEL, "question X50")
    assert "resumed 0" in result.output
    assert server.stats.inference_requests - sent_before >= 200


def test_sigterm_while_every_request_hangs_exits_143_and_resumes(
    tmp_path: Path, scripted_thread
) -> None:
    """Tiny chunks and a server that never answers: the runner is waiting for room to open
    another chunk when the signal comes, and must still stop, flush and exit."""
    state = {"hang": True}

    async def handler(seen, request):
        if seen.method == "POST" and state["hang"]:
            await hold_until_gone(request, 60)
        return None

    app = scripted_thread(handler)
    source = write_parquet(tmp_path / "in.parquet", prompts_table(120))
    out = tmp_path / "out.parquet"
    # 8 in flight (the limit slow-starts from 8 and no answer comes to grow it), 32+ chunks.
    args = [*run_args(source, out, app.url), "--chunk-size", "1"]
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(posts(app)) >= 8 or proc.poll() is not None, "requests in flight")
        time.sleep(0.2)  # let the runner fill its window of open chunks
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert b"interrupted by SIGTERM" in stderr
    assert committed_rows(staging_of(out)) == 0 and not out.exists()

    state["hang"] = False
    result = invoke(*args)

    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_rows(out)] == list(range(120))
    assert {r["llvm_status"] for r in read_rows(out)} == {"ok"}
