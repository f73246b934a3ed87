"""Writing files durably: Parquet parts, and the final output in Parquet, CSV or JSONL.

Every file is written to a temporary name in its final directory, fsynced, then renamed into
place, so a reader (or a crash) sees either nothing or the whole file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .sources import is_url, local_path

SCHEMA_METADATA_KEY = b"llvm_batch"


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


def default_output(input_path: str) -> str:
    """``<stem>.llvm.parquet`` beside a local input (in the working directory for a URL)."""
    name = input_path.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(ext)
    stem = os.path.splitext(name)[0] or "output"
    if is_url(input_path):
        return f"{stem}.llvm.parquet"
    return os.path.join(os.path.dirname(local_path(input_path)), f"{stem}.llvm.parquet")


def tmp_name(path: str) -> str:
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
        _discard(tmp)
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
        _discard(tmp)  # a half-written part would only hold on to the space that ran out
        raise


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


#: Rows (or bytes, whichever comes first) gathered into one row group of a Parquet output.
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024


class OutputWriter:
    """Streams tables into the final output file, renamed into place by :meth:`commit`."""

    def __init__(
        self,
        path: str,
        fmt: str,
        schema: pa.Schema,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.schema = schema
        self.rows = 0
        self._tmp = tmp_name(path)
        self._handle: IO[bytes] = open(self._tmp, "wb")
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._csv: pacsv.CSVWriter | None = None
        if fmt == "parquet":
            meta = dict(schema.metadata or {})
            if metadata is not None:
                meta[SCHEMA_METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
            self._parquet = pq.ParquetWriter(
                self._handle, schema.with_metadata(meta), compression="zstd"
            )
        elif fmt == "csv":
            self._csv_schema = _csv_schema(schema)
            self._csv = pacsv.CSVWriter(self._handle, self._csv_schema)

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self._parquet is not None:
            # Parts are small (a chunk, or less); written one by one they would each make a
            # row group, whose metadata the writer keeps until close: memory growing with
            # the row count, and a file slow to read. Gather them into big row groups.
            self._pending.append(table)
            self._pending_rows += table.num_rows
            self._pending_bytes += table.nbytes
            if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
                self._flush_row_group()
        elif self._csv is not None:
            self._csv.write_table(_flatten_for_csv(table, self._csv_schema))
        else:
            self._handle.write(_jsonl(table))

    def _flush_row_group(self) -> None:
        if self._parquet is None or not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        self._parquet.write_table(
            table.replace_schema_metadata(self._parquet.schema.metadata),
            row_group_size=max(1, table.num_rows),
        )

    def commit(self) -> None:
        """Finish the file and rename it over ``path``."""
        if self.rows == 0:
            self.write(self.schema.empty_table())
        if self._parquet is not None:
            self._flush_row_group()
            self._parquet.close()
        elif self._csv is not None:
            self._csv.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            if self._parquet is not None:
                self._parquet.close()
        except (OSError, pa.ArrowException):
            pass
        self._handle.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


def read_output_metadata(path: str) -> dict[str, Any] | None:
    """The llvm-batch metadata of a finished Parquet output, or None."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    raw = meta.get(SCHEMA_METADATA_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_nested(kind) or pa.types.is_dictionary(kind))


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    fields = [
        pa.field(f.name, pa.string()) if _nested(f.type) or pa.types.is_binary(f.type) else f
        for f in schema
    ]
    return pa.schema(fields)


def _flatten_for_csv(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Nested columns become JSON text: CSV has no lists or structs."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.type == target.field(field.name).type:
            columns.append(column)
            continue
        values = [
            None if v is None else json.dumps(v, ensure_ascii=False, default=_json_default)
            for v in column.to_pylist()
        ]
        columns.append(pa.array(values, pa.string()))
    return pa.table(columns, schema=target)


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def _jsonl(table: pa.Table) -> bytes:
    lines: Iterable[str] = (
        json.dumps(row, ensure_ascii=False, default=_json_default) for row in table.to_pylist()
    )
    return "".join(line + "\n" for line in lines).encode()


class OutputCounts(NamedTuple):
    """What :func:`write_output` counted: value counts and column totals, by column name."""

    values: dict[str, Counter[str]]
    totals: dict[str, int]


def write_output(
    tables: Iterable[pa.Table],
    writer: OutputWriter,
    *,
    count: Sequence[str] = (),
    total: Sequence[str] = (),
) -> OutputCounts:
    """Write ``tables`` through ``writer`` and commit it (or abort it on any error).

    Counts how often each non-null value occurs in the columns named in ``count``, and adds
    up the (integer) columns named in ``total``.
    """
    counts: dict[str, Counter[str]] = {name: Counter() for name in count}
    totals = dict.fromkeys(total, 0)
    try:
        for table in tables:
            writer.write(table)
            for name, counter in counts.items():
                for entry in pc.value_counts(table.column(name)).to_pylist():
                    if entry["values"] is not None:
                        counter[entry["values"]] += entry["counts"]
            for name in totals:
                totals[name] += pc.sum(table.column(name)).as_py() or 0
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return OutputCounts(counts, totals)
