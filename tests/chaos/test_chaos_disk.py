"""Running out of disk: while committing a part, while writing the final output, and before the
first manifest. The run stops cleanly with a message saying so, the checkpoint stays sound, and
the same command completes once there is room.

A real full disk needs a small filesystem: a 2 MiB tmpfs mounted for the test (needs root;
skipped otherwise). The RLIMIT_FSIZE test makes the same failure (EFBIG) without root.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from batch_support import cli_command, invoke, read_rows, staging_of, write_parquet
from chaos_support import REFERENCE_MODEL, assert_checkpoint_sound

from llvm_batch.server import Faults, reference_output

#: The runner's reliability contract holds in both wire protocols.
pytestmark = pytest.mark.usefixtures("protocol")

ROWS = 200


def noisy_prompts(rows: int, size: int = 1500, *, big: dict[int, int] | None = None) -> pa.Table:
    """Prompts that don't compress (so parts take real space); ``big`` sets some rows' size."""
    rng = random.Random(rows)
    sizes = [(big or {}).get(i, size) for i in range(rows)]
    prompts = [base64.b64encode(rng.randbytes(n)).decode() for n in sizes]
    return pa.table({"id": list(range(rows)), "prompt": prompts})


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def leave_free(disk: Path, room: int) -> Path:
    """Fill ``disk`` with a ballast file until only ``room`` bytes are free."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, free_bytes(disk) - room))
        handle.flush()
        os.fsync(handle.fileno())
    return ballast


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"can't mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def run_args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "run",
        str(source),
        "-o",
        str(out),
        "-m",
        REFERENCE_MODEL,
        "--base-url",
        url,
        "--chunk-size",
        "20",
        "--flush-interval",
        "0.05",
        "-c",
        "2",
        "--no-progress",
        *extra,
    ]


def assert_all_ok(out: Path, table: pa.Table) -> None:
    rows = read_rows(out)
    assert [r["id"] for r in rows] == table.column("id").to_pylist()
    assert all(r["llvm_status"] == "ok" for r in rows)
    assert all(r["llvm_output"] == reference_output(REFERENCE_MODEL, r["prompt"]) for r in rows)


def no_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if ".tmp-" in p.name]


def test_disk_full_while_committing_stops_cleanly_then_resumes(
    tmp_path: Path, small_disk: Path, make_server
) -> None:
    server = make_server(faults=Faults(latency=0.01))
    table = noisy_prompts(ROWS)
    source = write_parquet(tmp_path / "in.parquet", table)
    out = small_disk / "out.parquet"
    staging = staging_of(out)
    ballast = leave_free(small_disk, 150_000)  # room for a few parts of ~50 KB, not for 10

    result = invoke(*run_args(source, out, server.url))

    assert result.exit_code == 3, result.output
    assert "can't write the checkpoint" in result.output
    assert "No space left on device" in result.output and str(staging) in result.output
    assert "run the same command again" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    done = assert_checkpoint_sound(staging)
    assert done < ROWS
    assert no_temp_files(small_disk) == []
    sent = server.stats.inference_requests
    assert sent < ROWS  # it stopped sending once it could not save what came back

    ballast.unlink()  # the operator makes room
    result = invoke(*run_args(source, out, server.url))

    assert result.exit_code == 0, result.output
    assert_all_ok(out, table)
    assert f"resumed {done}" in result.output
    assert server.stats.inference_requests - sent == ROWS - done
    assert not staging.exists() and no_temp_files(small_disk) == []


def test_disk_full_while_writing_the_output_keeps_every_committed_row(
    tmp_path: Path, small_disk: Path, make_server
) -> None:
    server = make_server()
    table = noisy_prompts(ROWS)
    source = write_parquet(tmp_path / "in.parquet", table)
    # How much room the parts and the output each take: an unhindered run elsewhere.
    measured = tmp_path / "measured.parquet"
    assert invoke(*run_args(source, measured, server.url)).exit_code == 0
    size = measured.stat().st_size
    out = small_disk / "out.parquet"
    staging = staging_of(out)
    ballast = leave_free(small_disk, int(size * 1.5))  # the parts fit; parts + output don't
    sent = server.stats.inference_requests

    result = invoke(*run_args(source, out, server.url))

    assert result.exit_code == 3, result.output
    assert "can't write the output" in result.output and str(out) in result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not out.exists() and no_temp_files(small_disk) == []
    assert assert_checkpoint_sound(staging) == ROWS
    assert server.stats.inference_requests - sent == ROWS
    sent = server.stats.inference_requests

    ballast.unlink()
    result = invoke(*run_args(source, out, server.url))

    assert result.exit_code == 0, result.output
    assert_all_ok(out, table)
    assert server.stats.inference_requests == sent  # every row was already committed
    assert f"resumed {ROWS}" in result.output and not staging.exists()


def test_a_disk_already_full_exits_2_before_sending(
    tmp_path: Path, small_disk: Path, make_server
) -> None:
    server = make_server()
    source = write_parquet(tmp_path / "in.parquet", noisy_prompts(10))
    out = small_disk / "out.parquet"
    ballast = leave_free(small_disk, 0)

    result = invoke(*run_args(source, out, server.url))

    assert result.exit_code == 2, result.output
    assert "can't write the checkpoint" in result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert server.stats.inference_requests == 0
    assert no_temp_files(small_disk) == []

    ballast.unlink()
    assert invoke(*run_args(source, out, server.url)).exit_code == 0


LIMITED = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv.pop(1)),) * 2); "
    "runpy.run_module('llvm_batch.cli', run_name='__main__')"
)


def test_a_file_size_limit_hit_while_committing_stops_cleanly_then_resumes(
    tmp_path: Path, make_server
) -> None:
    """No root needed: RLIMIT_FSIZE makes writing a too-big part fail with EFBIG."""
    server = make_server()
    table = noisy_prompts(100, 200, big={65: 400_000})  # chunk 3 holds one huge row
    source = write_parquet(tmp_path / "in.parquet", table)
    out = tmp_path / "out.parquet"
    staging = staging_of(out)
    args = run_args(source, out, server.url, "-c", "1")

    limited = subprocess.run(
        [sys.executable, "-c", LIMITED, "150000", *cli_command(*args)[3:]],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert limited.returncode == 3, limited.stderr
    assert "can't write the checkpoint" in limited.stderr
    assert "File too large" in limited.stderr and "Traceback" not in limited.stderr
    assert not out.exists() and no_temp_files(tmp_path) == []
    done = assert_checkpoint_sound(staging)
    assert 0 < done < 100
    sent = server.stats.inference_requests

    result = invoke(*args)

    assert result.exit_code == 0, result.output
    assert_all_ok(out, table)
    assert server.stats.inference_requests - sent == 100 - done
