"""What a batch run will do, decided before anything is sent.

:func:`plan_run` reads what it must (the input's schema; its content hash) and checks
everything that can be checked; the :class:`RunPlan` it returns is a frozen value with no I/O
of its own, which the runner executes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..config import ENV_DEFAULT_MODEL
from ..errors import InputError
from .layout import plan_columns
from .options import BatchOptions
from .prompts import PromptSpec, Request
from .sources import Source, detect_format, is_url, local_path
from .target import check_target

#: Requests a dry run shows.
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class RunPlan:
    """The run's source, prompts, columns, model and fingerprint.

    ``fingerprint`` names the input's content and every option that shapes the output: a
    checkpoint or a finished output belongs to this run only if theirs is equal. A dry run
    has neither model nor fingerprint (empty).
    """

    input_path: str
    output_path: str
    output_format: str
    prefix: str
    source: Source
    spec: PromptSpec
    input_columns: list[str]
    output_schema: pa.Schema
    model: str
    fingerprint: dict[str, Any]

    @property
    def key_prefix(self) -> str:
        """The start of every row's idempotency key: the same job sends the same keys."""
        encoded = json.dumps(self.fingerprint, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


def default_output(input_path: str) -> str:
    """``<stem>.llvm.parquet`` beside a local input (in the working directory for a URL)."""
    name = input_path.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(ext)
    stem = os.path.splitext(name)[0] or "output"
    if is_url(input_path):
        return f"{stem}.llvm.parquet"
    return os.path.join(os.path.dirname(local_path(input_path)), f"{stem}.llvm.parquet")


def output_path_for(input_path: str, output_path: str | None) -> str:
    """The output: the one given, else the input's stem + ``.llvm.parquet``."""
    return str(output_path) if output_path else default_output(str(input_path))


def plan_run(input_path: str, output_path: str | None, opts: BatchOptions) -> RunPlan:
    """The plan of a run of ``opts`` from ``input_path``; an :class:`InputError` for anything
    that can't work. Blocking: it reads the input's schema and hashes its content."""
    output = output_path_for(input_path, output_path)
    output_format = detect_format(output, opts.output_format)
    spec = opts.prompt_spec()
    source_path = output if opts.retry_errors else str(input_path)
    if opts.retry_errors and not os.path.exists(local_path(source_path)):
        raise InputError(f"--retry-errors needs an existing output; {source_path!r} is missing")
    source = Source(
        source_path,
        output_format if opts.retry_errors else opts.input_format,
        string_columns=spec.text_columns(),
    )
    source.prescan()
    columns = plan_columns(source.schema, source.path, opts.prefix, opts.retry_errors)
    spec.check(source.schema)
    check_target(str(input_path), output, output_format)
    model, fingerprint = "", {}
    if not opts.dry_run:
        model = opts.model or ""
        if not model:
            raise InputError(f"no model given: pass --model or set {ENV_DEFAULT_MODEL}")
        fingerprint = {"input": source.fingerprint(), "options": opts.shaping()}
    return RunPlan(
        input_path=str(input_path),
        output_path=output,
        output_format=output_format,
        prefix=opts.prefix,
        source=source,
        spec=spec,
        input_columns=columns.input_columns,
        output_schema=columns.output_schema,
        model=model,
        fingerprint=fingerprint,
    )


def preview(plan: RunPlan, rows: int = PREVIEW_ROWS) -> list[str]:
    """The first ``rows`` requests as a dry run shows them (a skipped row says why)."""
    for _, batch in plan.source.chunks(rows):
        return [
            f"(skipped: {request})" if isinstance(request, str) else _shown(request)
            for request in plan.spec.render(batch)
        ]
    return []


def _shown(request: Request) -> str:
    text = request.shown()
    return text if len(text) <= 200 else text[:200] + "..."
