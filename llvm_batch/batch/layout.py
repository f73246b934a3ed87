"""Which columns go in and come out: the input's columns checked, the output's schema built."""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from ..errors import InputError
from . import columns as cols
from .checkpoint import ROW_COLUMN


class ColumnPlan(NamedTuple):
    """The input columns passed through, their schema, and the output's schema."""

    input_columns: list[str]
    input_schema: pa.Schema
    output_schema: pa.Schema


def plan_columns(schema: pa.Schema, path: str, prefix: str, retry_errors: bool) -> ColumnPlan:
    """The plan for an input of ``schema``; an :class:`InputError` for names that can't work.

    With ``retry_errors`` the input is an earlier output: its result columns are replaced.
    """
    given = schema.names
    twice = sorted({n for n in given if given.count(n) > 1})
    if twice:
        raise InputError(
            f"input {path!r} has more than one column named "
            f"{', '.join(repr(n) for n in twice)}; give each column its own name"
        )
    if ROW_COLUMN in given:
        raise InputError(
            f"input {path!r} has a column named {ROW_COLUMN!r}, a name "
            "llvm-batch keeps for itself; rename that column"
        )
    names = set(cols.result_names(prefix))
    if retry_errors and prefix + "status" not in given:
        raise InputError(
            f"{path!r} has no {prefix}status column: "
            "--retry-errors works on an output of llvm-batch run"
        )
    clash = names & set(given)
    if clash and not retry_errors:
        raise InputError(
            f"the input already has result column(s) {', '.join(sorted(clash))}; "
            "use --retry-errors to re-run its failed rows, or --prefix to name new ones"
        )
    kept = [n for n in given if n not in names]
    input_schema = pa.schema([schema.field(n) for n in kept])
    return ColumnPlan(
        kept, input_schema, pa.schema(list(input_schema) + list(cols.result_schema(prefix)))
    )
