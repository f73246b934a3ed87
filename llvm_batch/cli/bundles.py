"""The ``run`` options in bundles, one decorator each (sqlite-utils' idiom).

Each bundle lists its options in the order ``--help`` shows them. ``server_options``
(:mod:`.common`) is shared with the quick commands; these belong to ``run``.
"""

from __future__ import annotations

import click

from ..batch.options import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_PROGRESS_INTERVAL,
)
from ..config import (
    DEFAULT_MAX_OUTAGE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    ENV_DEFAULT_MODEL,
)
from ..retry import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY
from .common import F, stack_options
from .types import ConcurrencyType, Finite, json_object

FORMATS = click.Choice(["parquet", "csv", "jsonl"])


def output_options(func: F) -> F:
    """Where results go and how the run reports: files, formats, progress, summary."""
    return stack_options(
        func,
        click.option(
            "-o",
            "--output",
            help="Output file (.parquet, .csv, .jsonl). Default: INPUT's stem + .llvm.parquet.",
        ),
        click.option(
            "--input-format", type=FORMATS, help="Input format if the extension doesn't say."
        ),
        click.option(
            "--output-format", type=FORMATS, help="Output format if the extension doesn't say."
        ),
        click.option(
            "--prefix", default="llvm_", show_default=True, help="Prefix of the result columns."
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Validate, show the first prompts, count rows; send nothing.",
        ),
        click.option(
            "--max-error-rate",
            type=Finite(0, 1),
            default=0.0,
            show_default=True,
            help="Error rows / sent rows above which the exit code is 1.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Force the progress bar on or off (default: bar on a terminal, log lines "
            "otherwise).",
        ),
        click.option(
            "--progress-interval",
            type=Finite(min=0, min_open=True),
            default=DEFAULT_PROGRESS_INTERVAL,
            show_default=True,
            help="Seconds between progress log lines when not on a terminal (cron, Airflow).",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress and no summary."),
        click.option(
            "--summary-json",
            type=click.Path(dir_okay=False),
            help="Also write the summary as JSON here (for Airflow XCom).",
        ),
    )


def prompt_options(func: F) -> F:
    """Which model, and what each row sends it: a prompt column, a template, or chat."""
    return stack_options(
        func,
        click.option("-m", "--model", help=f"Model id (default: ${ENV_DEFAULT_MODEL})."),
        click.option(
            "--prompt-column",
            default="prompt",
            show_default=True,
            help="Column holding the prompt.",
        ),
        click.option(
            "--template", help="Prompt template over columns, e.g. 'Translate to French: {text}'."
        ),
        click.option(
            "--chat",
            is_flag=True,
            help="Chat mode: messages column, or --system plus a user template/prompt.",
        ),
        click.option(
            "--messages-column",
            default="messages",
            show_default=True,
            help="Chat messages column (list of {role, content}).",
        ),
        click.option("--system", help="System message (chat mode)."),
    )


def sampling_options(func: F) -> F:
    """Generation settings for every row, or per row from a column."""
    return stack_options(
        func,
        click.option("--max-tokens", type=click.IntRange(min=0), help="max_tokens for every row."),
        click.option("--temperature", type=Finite(), help="temperature for every row."),
        click.option("--top-k", type=click.IntRange(min=0), help="top_k for every row."),
        click.option("--top-p", type=Finite(0, 1), help="top_p for every row."),
        click.option("--params", callback=json_object, help="Extra params as a JSON object."),
        click.option("--max-tokens-column", help="Column with per-row max_tokens."),
        click.option("--temperature-column", help="Column with per-row temperature."),
        click.option("--top-k-column", help="Column with per-row top_k."),
        click.option("--top-p-column", help="Column with per-row top_p."),
        click.option("--params-column", help="Column with per-row params (JSON object)."),
    )


def retry_options(func: F) -> F:
    """How hard to push and how long to try: concurrency, rate, retries, timeouts, outages."""
    return stack_options(
        func,
        click.option(
            "-c",
            "--concurrency",
            type=ConcurrencyType(),
            default=DEFAULT_CONCURRENCY,
            show_default=True,
            help="Most requests in flight at once: the limit adapts below it to what the server "
            "holds. 'auto' finds the server's capacity without a number.",
        ),
        click.option(
            "--max-retries",
            type=click.IntRange(min=0),
            default=DEFAULT_MAX_RETRIES,
            show_default=True,
            help="Retries per row (attempts = 1 + retries).",
        ),
        click.option(
            "--retry-delay",
            type=Finite(min=0),
            default=DEFAULT_RETRY_DELAY,
            show_default=True,
            help="First backoff ceiling in seconds (doubles).",
        ),
        click.option(
            "--timeout",
            type=Finite(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds per attempt.",
        ),
        click.option(
            "--max-rps",
            type=Finite(min=0, min_open=True),
            help="At most this many requests per second.",
        ),
        click.option(
            "--max-response-mb",
            type=Finite(min=0, min_open=True),
            default=DEFAULT_MAX_RESPONSE_BYTES / 2**20,
            show_default=True,
            help="Largest answer read, in MiB; a bigger one fails its row (response_too_large).",
        ),
        click.option(
            "--priority",
            type=click.Choice(["high", "normal", "low"]),
            default="normal",
            show_default=True,
        ),
        click.option(
            "--max-outage",
            type=Finite(min=0),
            default=DEFAULT_MAX_OUTAGE,
            show_default=True,
            help="Seconds to wait out an unavailable server before stopping (exit 3).",
        ),
    )


def checkpoint_options(func: F) -> F:
    """How finished rows are committed, and what to do with a checkpoint already there."""
    return stack_options(
        func,
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=DEFAULT_CHUNK_SIZE,
            show_default=True,
            help="Rows per checkpoint chunk.",
        ),
        click.option(
            "--flush-interval",
            type=Finite(min=0, min_open=True),
            default=DEFAULT_FLUSH_INTERVAL,
            show_default=True,
            help="Seconds between checkpoint commits.",
        ),
        click.option(
            "--overwrite", is_flag=True, help="Discard any checkpoint or output and start over."
        ),
        click.option(
            "--wait-for-lock",
            is_flag=True,
            help="If another run is writing the same output, wait for it instead of exiting 3.",
        ),
        click.option(
            "--retry-errors",
            is_flag=True,
            help="Re-run only the rows of the existing output whose status is error.",
        ),
    )
