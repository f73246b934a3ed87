"""The output target, checked before anything is sent: format, compression, place, permissions.

Everything a run can find out about where it will write is found here, up front, so that a
bad target exits 2 with nothing sent instead of failing after the rows were paid for.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError, ResumeMismatchError
from .checkpoint import MANIFEST, describe_change, staging_dir_for
from .sources import is_url, local_path
from .writers import read_output_metadata

#: Compression suffixes an output may carry, and the codec each writes.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz"}


def output_compression(path: str) -> str | None:
    """The codec the output's name asks for (``out.csv.gz`` -> gzip), or None."""
    lowered = path.lower()
    for suffix, codec in COMPRESSIONS.items():
        if lowered.endswith(suffix):
            return codec
    return None


def check_target(input_path: str, output_path: str, fmt: str) -> None:
    """Raise :class:`InputError` when the run could not write its output."""
    if is_url(output_path):
        raise InputError(
            f"the output {output_path!r} is a URL; llvm-batch writes its checkpoint and output "
            "to a local file (copy it up afterwards), so name a local path with -o"
        )
    codec = output_compression(output_path)
    if codec is not None and fmt == "parquet":
        raise InputError(
            f"the output {output_path!r} names a compressed Parquet file; Parquet compresses "
            "itself (zstd): drop the compression suffix"
        )
    out = local_path(output_path)
    if not is_url(input_path) and os.path.exists(local_path(input_path)):
        if _same_file(local_path(input_path), out):
            raise InputError(
                f"the output {output_path!r} is the input file; the input is never "
                "overwritten: name another output with -o"
            )
    check_writable(out, "output", create_directory=True)


def _same_file(a: str, b: str) -> bool:
    if not os.path.exists(b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str, what: str, *, create_directory: bool = False) -> None:
    """Refuse a path the run could not write; with ``create_directory`` its missing
    directories are fine as long as the run can create them (the run does, as it starts)."""
    if os.path.isdir(path):
        raise InputError(f"the {what} {path!r} is a directory; name a file")
    directory = os.path.dirname(os.path.abspath(path))
    if create_directory:
        while not os.path.exists(directory) and os.path.dirname(directory) != directory:
            directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise InputError(f"can't write the {what} {path!r}: its directory does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"can't write the {what} {path!r}: its directory is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"can't write the {what} {path!r}: the file is read-only")


def finished_rows(output_path: str, fmt: str, fingerprint: dict[str, Any]) -> int | None:
    """The row count when the output is a finished run of this very job; None to run it.

    The finished output carries the run's fingerprint (input and options), checked as a
    checkpoint's is: another template or model is not "already complete", and an output
    that is no finished run of this input is not replaced without ``--overwrite``.
    """
    out = local_path(output_path)
    if not os.path.exists(out) or os.path.exists(os.path.join(staging_dir_for(out), MANIFEST)):
        return None
    meta = read_output_metadata(out, fmt)
    if meta is not None and meta.get("bytes", os.path.getsize(out)) != os.path.getsize(out):
        meta = None  # replaced or edited since the run that wrote it
    if meta is None or meta.get("input") != fingerprint["input"]:
        raise InputError(
            f"the output {output_path!r} already exists and is not a finished run of "
            "this input; pass --overwrite to replace it"
        )
    # An output written before outputs carried their options is judged by its input alone.
    if "options" in meta and meta["options"] != fingerprint["options"]:
        change = describe_change({"options": meta.get("options")}, fingerprint)
        raise ResumeMismatchError(
            f"the output {output_path!r} is a finished run of this input with "
            f"{change.removeprefix('a different input and ')}; pass --overwrite to run it again"
        )
    return int(meta.get("rows", 0))
