"""The output in Parquet, CSV or JSONL: streamed into a temporary file, renamed into place
durably (:mod:`.durable`) once whole; and its run record read back."""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import lzma
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .durable import atomic_write_bytes, fsync_dir, fsync_file, tmp_name

SCHEMA_METADATA_KEY = b"llvm_batch"


#: Rows (or bytes, whichever comes first) gathered into one row group of a Parquet output.
ROW_GROUP_ROWS = 64 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024


def done_record_path(output: str) -> str:
    """Where a finished CSV/JSONL output keeps its run record (Parquet keeps it inside)."""
    return output + ".llvm-run.json"


def _compressed(raw: IO[bytes], codec: str | None) -> Any:
    """A writable stream compressing into ``raw`` with ``codec`` (None: ``raw`` itself)."""
    if codec is None:
        return raw
    if codec == "xz":
        return lzma.LZMAFile(raw, "wb")
    return pa.CompressedOutputStream(raw, codec)


class OutputWriter:
    """Streams tables into the final output file, renamed into place by :meth:`commit`.

    ``metadata`` (the run's record: input and options fingerprint, rows) goes into a Parquet
    file's schema, or beside a CSV/JSONL file (:func:`done_record_path`), so that a re-run
    knows whether the output is a finished run of the same job.
    """

    def __init__(
        self,
        path: str,
        fmt: str,
        schema: pa.Schema,
        metadata: Mapping[str, Any] | None = None,
        *,
        compression: str | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.schema = schema
        self.rows = 0
        self._metadata = metadata
        self._tmp = tmp_name(path)
        self._raw: IO[bytes] = open(self._tmp, "wb")
        self._handle: Any = _compressed(self._raw, compression)
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
        self._handle.close()
        if not self._raw.closed:
            self._raw.close()
        fsync_file(self._tmp)
        record = done_record_path(self.path)
        if self._parquet is None and self._metadata is not None:
            done = {**self._metadata, "bytes": os.path.getsize(self._tmp)}
            atomic_write_bytes(record, json.dumps(done, sort_keys=True).encode())
        elif os.path.exists(record):
            os.unlink(record)
        os.replace(self._tmp, self.path)
        fsync_dir(os.path.dirname(self.path) or ".")

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            if self._parquet is not None:
                self._parquet.close()
        except (OSError, pa.ArrowException):
            pass
        for stream in (self._handle, self._raw):
            try:
                stream.close()
            except (OSError, ValueError, pa.ArrowException):
                pass
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass


def read_output_metadata(path: str, fmt: str = "parquet") -> dict[str, Any] | None:
    """The run record of a finished output (see :class:`OutputWriter`), or None."""
    raw: bytes | None
    if fmt == "parquet":
        try:
            raw = (pq.read_schema(path).metadata or {}).get(SCHEMA_METADATA_KEY)
        except (OSError, pa.ArrowException):
            return None
    else:
        try:
            with open(done_record_path(path), "rb") as handle:
                raw = handle.read()
        except OSError:
            return None
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_nested(kind) or pa.types.is_dictionary(kind))


def _csv_type(kind: pa.DataType) -> pa.DataType:
    """The type a column has in CSV: categories as their values, nested values as JSON text."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if _nested(kind) or pa.types.is_binary(kind):
        return pa.string()
    return kind


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _csv_type(f.type)) for f in schema])


def _flatten_for_csv(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Categories become their values and nested columns JSON text: CSV has neither."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = target.field(field.name).type
        if field.type == kind:
            columns.append(column)
        elif pa.types.is_dictionary(field.type) and field.type.value_type == kind:
            columns.append(column.cast(kind))
        else:
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


class WriteInterrupted(Exception):
    """The output's assembly was asked to stop (a signal); nothing was written."""


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
    stop: Callable[[], bool] = lambda: False,
) -> OutputCounts:
    """Write ``tables`` through ``writer`` and commit it (or abort it on any error).

    Counts how often each non-null value occurs in the columns named in ``count``, and adds
    up the (integer) columns named in ``total``. ``stop()`` is asked between tables: True
    aborts with :class:`WriteInterrupted`.
    """
    counts: dict[str, Counter[str]] = {name: Counter() for name in count}
    totals = dict.fromkeys(total, 0)
    try:
        for table in tables:
            if stop():
                raise WriteInterrupted(writer.path)
            writer.write(table)
            for name, counter in counts.items():
                for entry in pc.value_counts(table.column(name)).to_pylist():
                    if entry["values"] is not None:
                        counter[entry["values"]] += entry["counts"]
            for name in totals:
                totals[name] += pc.sum(table.column(name)).as_py() or 0
        if stop():
            raise WriteInterrupted(writer.path)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return OutputCounts(counts, totals)
