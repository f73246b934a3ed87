"""Files written durably: to a temporary name in their final directory, fsynced, then renamed
into place, so a reader (or a crash) sees either nothing or the whole file."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (no-op where directories can't be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Flush ``path``'s content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(path: str) -> str:
    """A temporary name beside ``path``, this process's own."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def write_part(path: str, table: pa.Table) -> None:
    """Write a checkpoint part (Parquet) atomically and durably."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)  # a half-written part would only hold on to the space that ran out
        raise


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
