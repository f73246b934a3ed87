"""The result columns (DESIGN.md "Result columns"): their schema, and rows of them as Arrow.

A finished row is a :class:`RowResult`; :func:`result_arrays` turns a list of them into the
Arrow columns appended to the input's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow as pa

from .. import codec
from ..attempt import Outcome
from ..errors import LLVMError, excerpt

DEFAULT_PREFIX = "llvm_"
ERROR_TEXT_CHARS = 500

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

#: (suffix, Arrow type) in output order.
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("output", pa.string()),
    ("status", pa.string()),
    ("error_type", pa.string()),
    ("error", pa.string()),
    ("http_status", pa.int16()),
    ("attempts", pa.int16()),
    ("retry_wait_s", pa.float32()),
    ("latency_ms", pa.float32()),
    ("model", pa.string()),
    ("metadata", pa.string()),
)


class RowResult(NamedTuple):
    """One row's result columns, in :data:`RESULT_FIELDS` order."""

    output: str | None
    status: str
    error_type: str | None
    error: str | None
    http_status: int | None
    attempts: int
    retry_wait_s: float
    latency_ms: float
    model: str | None
    metadata: str | None


def result_names(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [prefix + suffix for suffix, _ in RESULT_FIELDS]


def result_schema(prefix: str = DEFAULT_PREFIX) -> pa.Schema:
    return pa.schema([pa.field(prefix + suffix, kind) for suffix, kind in RESULT_FIELDS])


def result_arrays(rows: Sequence[RowResult]) -> list[pa.Array]:
    """Arrow arrays, one per result column, for ``rows``."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in RESULT_FIELDS]
    return [
        pa.array(values, type=kind)
        for values, (_, kind) in zip(columns, RESULT_FIELDS, strict=True)
    ]


def skipped(reason: str, model: str | None) -> RowResult:
    """A row that was not sent because its input is unusable."""
    return RowResult(None, STATUS_SKIPPED, "invalid_input", reason, None, 0, 0.0, 0.0, model, None)


def from_outcome(outcome: Outcome, model: str, *, chat: bool = False) -> RowResult:
    """A row's result from the client's outcome of its inference call."""
    if outcome.error is not None:
        return from_error(outcome.error, model, outcome)
    answer = outcome.value
    output = answer.get("outputs")
    if output is not None and not isinstance(output, str):
        output = codec.dumps_text(output)
    return RowResult(
        output,
        STATUS_OK,
        None,
        None,
        outcome.http_status,
        outcome.attempts,
        outcome.retry_wait_s,
        outcome.latency_ms,
        str(answer.get("model_id") or model),
        _metadata(answer),
    )


def from_error(error: LLVMError, model: str, outcome: Outcome | None = None) -> RowResult:
    """A failed row: the error's category and readable (already redacted) text."""
    return RowResult(
        None,
        STATUS_ERROR,
        error.error_type,
        excerpt(str(error), ERROR_TEXT_CHARS),
        error.status,
        outcome.attempts if outcome else error.attempts,
        outcome.retry_wait_s if outcome else 0.0,
        outcome.latency_ms if outcome else 0.0,
        model,
        None,
    )


def _metadata(answer: dict[str, Any]) -> str | None:
    meta = answer.get("metadata")
    if len(answer) <= 3 and isinstance(meta, dict) and answer.keys() <= _ANSWER_KEYS:
        extra: dict[str, Any] = meta  # the usual answer: its metadata is all there is to keep
    else:
        extra = {k: v for k, v in answer.items() if k not in _ANSWER_KEYS}
        if isinstance(meta, dict):
            extra = {**meta, **extra}
        elif meta is not None:
            extra["metadata"] = meta
    if not extra:
        return None
    return codec.dumps_text(extra)


_ANSWER_KEYS = frozenset({"outputs", "model_id", "metadata"})


def row_from_columns(values: Sequence[Any]) -> RowResult:
    """A RowResult from existing result-column values (a kept row of ``--retry-errors``)."""
    out = list(values)
    out[5] = out[5] or 0
    out[6] = out[6] or 0.0
    out[7] = out[7] or 0.0
    return RowResult(*out)


def kept_results(batch: pa.RecordBatch, prefix: str = DEFAULT_PREFIX) -> dict[int, RowResult]:
    """The results an earlier output already holds, by row offset, for rows not in error.

    ``--retry-errors`` keeps these as they are and sends the others again.
    """
    values = [batch.column(name).to_pylist() for name in result_names(prefix)]
    status = values[1]
    return {
        i: row_from_columns([column[i] for column in values])
        for i in range(batch.num_rows)
        if status[i] != STATUS_ERROR
    }
