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
from ..errors import LLVMError, excerpt, hide
from ..protocol import WireProtocol

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
    ("input_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("finish_reason", pa.string()),
    ("metadata", pa.string()),
)
#: Why generation stopped when it hit ``max_tokens`` (the output is cut short).
FINISH_LENGTH = "length"


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
    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
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
    return RowResult(
        None, STATUS_SKIPPED, "invalid_input", reason, None, 0, 0.0, 0.0, model, *_NOTHING
    )


def from_outcome(
    outcome: Outcome, model: str, wire: WireProtocol, *, secret: str | None = None
) -> RowResult:
    """A row's result from the client's outcome of its call, read through ``wire``.

    An answer that repeats the API key (in any of its forms) is stored with the key hidden;
    one holding text that can't be stored (a lone surrogate) fails its row, alone.
    """
    if outcome.error is not None:
        return from_error(outcome.error, model, outcome)
    answer = outcome.value
    output = wire.output_of(answer)
    if output is not None and not isinstance(output, str):
        output = codec.dumps_text(output)
    usage = wire.usage_of(answer)
    metadata = wire.metadata_of(answer)
    texts: tuple[str | None, ...] = (
        output,
        str(wire.model_of(answer) or model),
        codec.dumps_text(metadata) if metadata else None,
        usage.finish_reason,
    )
    if secret:
        texts = tuple(None if text is None else hide(text, secret) for text in texts)
    for label, text in zip(("output", "model id", "metadata", "finish reason"), texts, strict=True):
        if text is not None and not text.isascii():
            flaw = unstorable(text)
            if flaw is not None:
                # Arrow and Parquet hold UTF-8 only: this row fails, not the chunk it is in.
                reason = f"the answer's {label} {flaw}"
                return _failed("invalid_response", reason, outcome.http_status, model, outcome)
    return RowResult(
        texts[0],
        STATUS_OK,
        None,
        None,
        outcome.http_status,
        outcome.attempts,
        outcome.retry_wait_s,
        outcome.latency_ms,
        texts[1],
        _int32(usage.input_tokens),
        _int32(usage.output_tokens),
        texts[3],
        texts[2],
    )


def unstorable(text: str) -> str | None:
    """Why ``text`` can't be stored as UTF-8 (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        return (
            f"holds a lone surrogate ({char!r} at character {exc.start}), text cut in the middle"
            " of a character; it can't be stored as UTF-8"
        )
    return None


def storable_text(text: str) -> str:
    """``text`` with any lone surrogate written as its ``\\udXXX`` escape (error messages)."""
    if text.isascii() or unstorable(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def from_error(error: LLVMError, model: str, outcome: Outcome | None = None) -> RowResult:
    """A failed row: the error's category and readable (already redacted) text."""
    return _failed(error.error_type, str(error), error.status, model, outcome, error.attempts)


def _failed(
    error_type: str,
    text: str,
    status: int | None,
    model: str,
    outcome: Outcome | None,
    attempts: int = 0,
) -> RowResult:
    return RowResult(
        None,
        STATUS_ERROR,
        error_type,
        storable_text(excerpt(text, ERROR_TEXT_CHARS)),
        status,
        outcome.attempts if outcome else attempts,
        outcome.retry_wait_s if outcome else 0.0,
        outcome.latency_ms if outcome else 0.0,
        model,
        *_NOTHING,
    )


def stopped(reason: str | None, model: str) -> RowResult:
    """A row the run never got to: it stopped first (``df.llvm``, which has no resume)."""
    return RowResult(None, STATUS_ERROR, "incomplete", reason, None, 0, 0.0, 0.0, model, *_NOTHING)


#: input_tokens, output_tokens, finish_reason, metadata of a row without an answer.
_NOTHING = (None, None, None, None)
_INT32_MAX = 2**31 - 1


def _int32(value: int | None) -> int | None:
    """A token count that fits the int32 column (a server's nonsense becomes null)."""
    return value if value is not None and 0 <= value <= _INT32_MAX else None


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
    # An output of an older llvm-batch may lack the token columns: nulls for those.
    names = batch.schema.names
    values = [
        batch.column(name).to_pylist() if name in names else [None] * batch.num_rows
        for name in result_names(prefix)
    ]
    status = values[1]
    return {
        i: row_from_columns([column[i] for column in values])
        for i in range(batch.num_rows)
        if status[i] != STATUS_ERROR
    }
