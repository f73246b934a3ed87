"""The checkpoint: finished rows committed as parts under a staging directory, and a manifest.

A part is a Parquet file of finished rows (input columns, result columns and the row number),
written to a temporary name, fsynced and renamed; only then is it listed in the manifest,
itself replaced atomically. A part not in the manifest (a crash between the two) is ignored
and deleted, so its rows run again: output is exactly-once, delivery at-least-once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError, ResumeMismatchError
from .durable import atomic_write_bytes, fsync_dir, write_part

MANIFEST = "manifest.json"
ROW_COLUMN = "__llvm_row"
MANIFEST_VERSION = 1


def staging_dir_for(output: str) -> str:
    return output + ".llvm-staging"


class Checkpoint:
    """The staging directory of one output file: committed parts and their manifest."""

    def __init__(self, directory: str, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.dropped: list[str] = []  # damaged or missing parts found on resume
        self._by_chunk: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for part in manifest["parts"]:
            self._by_chunk[int(part["chunk"])].append(part)

    @classmethod
    def open(
        cls, output: str, fingerprint: dict[str, Any], *, chunk_size: int, overwrite: bool
    ) -> Checkpoint:
        """Resume the checkpoint for ``output``, or start one; refuse a mismatched one.

        A resumed checkpoint keeps the chunk size it was started with (:attr:`chunk_size`).
        """
        directory = staging_dir_for(output)
        if overwrite and os.path.isdir(directory):
            _empty(directory)  # not removed: the run's lock is on the directory itself
        path = os.path.join(directory, MANIFEST)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    manifest = json.load(handle)
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"the checkpoint manifest {path!r} is unreadable ({exc}); "
                    "pass --overwrite to start over"
                ) from None
            if manifest.get("fingerprint") != fingerprint:
                raise ResumeMismatchError(
                    f"{directory!r} holds a checkpoint for "
                    f"{describe_change(manifest.get('fingerprint'), fingerprint)}"
                    " than this run; pass --overwrite to discard it and start over"
                )
            checkpoint = cls(directory, manifest)
            checkpoint._drop_damaged()
            checkpoint._remove_orphans()
            return checkpoint
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise InputError(f"can't create the staging directory {directory!r}: {exc}") from None
        manifest = {
            "version": MANIFEST_VERSION,
            "fingerprint": fingerprint,
            "created": time.time(),
            "chunk_size": chunk_size,
            "parts": [],
        }
        checkpoint = cls(directory, manifest)
        checkpoint._remove_orphans()
        try:
            checkpoint._write_manifest()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise InputError(f"can't write the checkpoint in {directory!r}: {reason}") from None
        fsync_dir(os.path.dirname(os.path.abspath(directory)))
        return checkpoint

    @property
    def chunk_size(self) -> int:
        return int(self.manifest["chunk_size"])

    @property
    def committed_rows(self) -> int:
        return sum(int(part["rows"]) for part in self.manifest["parts"])

    @property
    def chunks(self) -> list[int]:
        return sorted(self._by_chunk)

    def rows_done(self, chunk: int) -> set[int]:
        """Row numbers of ``chunk`` already committed."""
        done: set[int] = set()
        for part in self._by_chunk.get(chunk, ()):
            table = pq.read_table(self._path(part), columns=[ROW_COLUMN])
            done.update(table.column(ROW_COLUMN).to_pylist())
        return done

    def commit(self, chunk: int, table: pa.Table) -> None:
        """Durably add a part of finished rows of ``chunk`` (blocking: run off the loop)."""
        seq = len(self._by_chunk[chunk])
        name = f"part-{chunk:08d}-{seq:04d}.parquet"
        while any(part["file"] == name for part in self.manifest["parts"]) or name in self.dropped:
            seq += 1
            name = f"part-{chunk:08d}-{seq:04d}.parquet"
        write_part(os.path.join(self.directory, name), table)
        entry = {"file": name, "chunk": chunk, "rows": table.num_rows}
        self.manifest["parts"].append(entry)
        self._by_chunk[chunk].append(entry)
        self._write_manifest()

    def tables(self, chunk: int) -> Iterator[pa.Table]:
        """The committed rows of ``chunk`` as one table in row order, row column dropped."""
        parts = [pq.read_table(self._path(part)) for part in self._by_chunk.get(chunk, ())]
        if not parts:
            return
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
        rows = table.column(ROW_COLUMN)
        if len(parts) > 1 or not _ascending(rows):
            table = table.take(pc.sort_indices(rows))
        yield table.drop_columns([ROW_COLUMN])

    def assembled(self, schema: pa.Schema) -> Iterator[pa.Table]:
        """Every committed row, chunk by chunk in row order, cast to ``schema``."""
        for chunk in self.chunks:
            for table in self.tables(chunk):
                yield table if table.schema == schema else table.cast(schema)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _path(self, part: dict[str, Any]) -> str:
        return os.path.join(self.directory, str(part["file"]))

    def _write_manifest(self) -> None:
        data = json.dumps(self.manifest, separators=(",", ":")).encode()
        atomic_write_bytes(os.path.join(self.directory, MANIFEST), data)

    def _drop_damaged(self) -> None:
        """Forget parts that are missing, unreadable or short: their rows run again.

        A part is only listed once fsynced, so this is a disk or a person at fault; paying
        again for a few rows beats refusing to resume or writing an output with holes.
        """
        kept = []
        for part in self.manifest["parts"]:
            try:
                whole = pq.read_metadata(self._path(part)).num_rows == int(part["rows"])
            except (OSError, pa.ArrowException, KeyError, ValueError):
                whole = False
            if whole:
                kept.append(part)
            else:
                self.dropped.append(str(part.get("file")))
        if self.dropped:
            self.manifest["parts"] = kept
            self._by_chunk.clear()
            for part in kept:
                self._by_chunk[int(part["chunk"])].append(part)
            self._write_manifest()

    def _remove_orphans(self) -> None:
        listed = {part["file"] for part in self.manifest["parts"]} | {MANIFEST}
        for name in os.listdir(self.directory):
            if name not in listed:
                os.unlink(os.path.join(self.directory, name))


def _empty(directory: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _ascending(column: pa.ChunkedArray) -> bool:
    if len(column) < 2:
        return True
    values = column.combine_chunks()
    return bool(pc.all(pc.greater(values.slice(1), values.slice(0, len(values) - 1))).as_py())


def describe_change(old: Any, new: dict[str, Any]) -> str:
    """How fingerprint ``new`` differs from ``old``: "a different input and different options
    (model, template)"."""
    old = old if isinstance(old, dict) else {}
    described = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key == "options":
            was, now = old.get(key) or {}, new.get(key) or {}
            names = sorted(n for n in set(was) | set(now) if was.get(n) != now.get(n))
            described.append(f"different options ({', '.join(names)})")
        else:
            described.append(f"a different {key}")
    return " and ".join(described) or "a different run"
