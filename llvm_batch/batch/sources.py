"""Reading inputs: CSV, Parquet and JSONL, local or fsspec URLs, as fixed-size record batches.

Memory stays flat whatever the file's length: files are read as streams of record batches,
cut and joined into chunks of exactly ``chunk_size`` rows (the last may be shorter), so that
chunk *i* always holds rows ``[i*chunk_size, (i+1)*chunk_size)`` — the unit of checkpointing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import InputError, safe_url

FORMATS = ("parquet", "csv", "jsonl")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
READ_BLOCK_BYTES = 4 << 20


def detect_format(path: str, given: str | None = None) -> str:
    """The format named by ``given``, else by the path's extension (``.gz`` etc. ignored)."""
    if given:
        fmt = given.lower()
        if fmt == "json":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise InputError(f"unknown format {given!r}: use one of {', '.join(FORMATS)}")
        return fmt
    name = path.rsplit("/", 1)[-1].lower()
    for compression in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(compression)
    ext = os.path.splitext(name)[1]
    if ext not in _EXTENSIONS:
        raise InputError(
            f"can't tell the format of {path!r} from its extension; "
            f"pass --input-format/--output-format ({', '.join(FORMATS)})"
        )
    return _EXTENSIONS[ext]


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


_COMPRESSED = (".gz", ".bz2", ".zst", ".xz")


@contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading: a local file, a compressed file, or an fsspec URL."""
    local = local_path(path)
    if not is_url(path) and os.path.isdir(local):
        raise InputError(f"input {path!r} is a directory, not a file")
    try:
        if is_url(path) or local.lower().endswith(_COMPRESSED):
            import fsspec

            opened: Any = fsspec.open(path, "rb", compression="infer")
            handle = opened.open()
        else:
            handle = open(local, "rb")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputError(f"can't read input {safe_url(path)!r}: {reason}") from None
    with handle:
        yield handle


class Source:
    """An input file, opened lazily; ``schema`` and ``chunks()`` read it as a stream."""

    def __init__(
        self,
        path: str,
        fmt: str | None = None,
        *,
        string_columns: tuple[str, ...] = (),
    ) -> None:
        self.path = str(path)
        self.format = detect_format(self.path, fmt)
        self._string_columns = string_columns
        self._all_text = False
        self._rows: int | None = None
        self.schema = self._read_schema()

    def _read_schema(self) -> pa.Schema:
        with self._batches() as batches:
            return batches.schema

    @contextmanager
    def _batches(self) -> Iterator[Any]:
        """A stream of record batches with a ``schema`` attribute (a RecordBatchReader)."""
        with _open_binary(self.path) as handle:
            try:
                if self.format == "parquet":
                    reader = _ParquetStream(pq.ParquetFile(handle))
                elif self.format == "csv":
                    reader = pacsv.open_csv(
                        handle,
                        read_options=pacsv.ReadOptions(block_size=READ_BLOCK_BYTES),
                        convert_options=pacsv.ConvertOptions(column_types=self._text_types()),
                    )
                else:
                    reader = pajson.open_json(
                        handle, read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES)
                    )
            except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
                raise InputError(_unreadable(self.path, self.format, exc)) from None
            yield reader

    def _text_types(self) -> dict[str, pa.DataType]:
        names = self._string_columns
        if self._all_text:
            with _open_binary(self.path) as handle:
                names = tuple(pacsv.open_csv(handle).schema.names)
        return {name: pa.string() for name in names}

    def prescan(self) -> None:
        """Read a CSV or JSONL file through once, before anything is sent, so that its schema
        holds for the whole file: a CSV whose column types change part-way is read as text
        (every value exactly as written); a JSONL file that does so is refused.
        """
        if self.format == "parquet":
            return
        try:
            self._rows = self._count()
        except InputError:
            if self.format != "csv":
                raise
            self._all_text = True
            self.schema = self._read_schema()
            self._rows = self._count()

    def _count(self) -> int:
        return sum(batch.num_rows for _, batch in self.chunks(64 * 1024))

    def num_rows(self) -> int | None:
        """The row count when known without a full read (Parquet, a pre-scanned file)."""
        if self.format != "parquet":
            return self._rows
        with _open_binary(self.path) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def count_rows(self) -> int:
        """The row count, reading the whole file if need be."""
        known = self.num_rows()
        if known is not None:
            return known
        return sum(chunk.num_rows for _, chunk in self.chunks(64 * 1024))

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(chunk_index, record_batch)`` with exactly ``chunk_size`` rows (the last fewer)."""
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        index = 0
        with self._batches() as reader:
            iterator = iter(reader)
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
                    raise InputError(_unreadable(self.path, self.format, exc)) from None
                if batch.schema != self.schema:
                    batch = _conform(batch, self.schema, self.path)
                offset = 0
                while offset < batch.num_rows:
                    take = min(chunk_size - pending_rows, batch.num_rows - offset)
                    pending.append(batch.slice(offset, take))
                    pending_rows += take
                    offset += take
                    if pending_rows == chunk_size:
                        yield index, _combine(pending, self.schema)
                        index += 1
                        pending, pending_rows = [], 0
        if pending_rows:
            yield index, _combine(pending, self.schema)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input's content, to refuse resuming against a changed file."""
        if is_url(self.path):
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(self.path)
            info = fs.info(paths[0])
            keep = ("size", "ETag", "etag", "mtime", "LastModified", "md5Hash", "crc32c")
            return {"path": self.path, **{k: str(info[k]) for k in keep if k in info}}
        local = local_path(self.path)
        digest = hashlib.blake2b(digest_size=16)
        with open(local, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return {"size": os.path.getsize(local), "blake2b": digest.hexdigest()}


class _ParquetStream:
    def __init__(self, file: pq.ParquetFile) -> None:
        self._file = file
        self.schema = file.schema_arrow

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return iter(self._file.iter_batches(batch_size=64 * 1024))


def _combine(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.concat_batches(batches)


def _conform(batch: pa.RecordBatch, schema: pa.Schema, path: str) -> pa.RecordBatch:
    try:
        return pa.Table.from_batches([batch]).cast(schema).to_batches()[0]
    except (pa.ArrowException, ValueError) as exc:
        raise InputError(
            f"input {safe_url(path)!r} changes its column types part-way: {exc}"
        ) from None


def _unreadable(path: str, fmt: str, exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "changed from" in detail or "conversion error" in detail:
        detail = f"its column types change part-way ({detail}); give every row the same types"
    return f"can't read {safe_url(path)!r} as {fmt}: {safe_url(detail)}"
