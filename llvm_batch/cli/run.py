"""``llvm-batch run``: the batch job, a thin layer over :func:`llvm_batch.run_batch`."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click

from ..batch import run_batch
from ..batch.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_PROGRESS_INTERVAL,
)
from ..batch.durable import atomic_write_bytes
from ..errors import InputError
from ..options import (
    DEFAULT_MAX_OUTAGE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    ENV_DEFAULT_MODEL,
    Limits,
)
from ..retry import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY
from .common import UsageFailure, read_key_file, server_options, setup_logging
from .jobfile import load_job_file


class Finite(click.FloatRange):
    """A float option that is a number: ``inf`` and ``nan`` are refused (exit 2)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        raise click.BadParameter(
            f"must be a JSON object, e.g. '{{\"seed\": 1}}'; got {value!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"seed\": 1}'")
    return parsed


class ConcurrencyType(click.ParamType):  # type: ignore[type-arg]
    """A ceiling of at least 1, or ``auto``."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return Limits.parse(value).describe()
        except ValueError:
            self.fail(f"must be an integer of at least 1, or 'auto'; got {value!r}", param, ctx)


@click.command()
@click.argument("input_path", metavar="INPUT", required=False)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=load_job_file,
    help="A TOML job file holding any of these options (and `input`); flags override it.",
)
@click.option(
    "-o",
    "--output",
    help="Output file (.parquet, .csv, .jsonl). Default: INPUT's stem + .llvm.parquet.",
)
@click.option(
    "--input-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    help="Input format if the extension doesn't say.",
)
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    help="Output format if the extension doesn't say.",
)
@click.option("-m", "--model", help=f"Model id (default: ${ENV_DEFAULT_MODEL}).")
@click.option(
    "--prompt-column", default="prompt", show_default=True, help="Column holding the prompt."
)
@click.option(
    "--template", help="Prompt template over columns, e.g. 'Translate to French: {text}'."
)
@click.option(
    "--chat",
    is_flag=True,
    help="Chat mode: messages column, or --system plus a user template/prompt.",
)
@click.option(
    "--messages-column",
    default="messages",
    show_default=True,
    help="Chat messages column (list of {role, content}).",
)
@click.option("--system", help="System message (chat mode).")
@click.option("--max-tokens", type=click.IntRange(min=0), help="max_tokens for every row.")
@click.option("--temperature", type=Finite(), help="temperature for every row.")
@click.option("--top-k", type=click.IntRange(min=0), help="top_k for every row.")
@click.option("--top-p", type=Finite(0, 1), help="top_p for every row.")
@click.option("--params", callback=_json_object, help="Extra params as a JSON object.")
@click.option("--max-tokens-column", help="Column with per-row max_tokens.")
@click.option("--temperature-column", help="Column with per-row temperature.")
@click.option("--top-k-column", help="Column with per-row top_k.")
@click.option("--top-p-column", help="Column with per-row top_p.")
@click.option("--params-column", help="Column with per-row params (JSON object).")
@click.option("--prefix", default="llvm_", show_default=True, help="Prefix of the result columns.")
@server_options
@click.option(
    "-c",
    "--concurrency",
    type=ConcurrencyType(),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Most requests in flight at once: the limit adapts below it to what the server "
    "holds. 'auto' finds the server's capacity without a number.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RETRIES,
    show_default=True,
    help="Retries per row (attempts = 1 + retries).",
)
@click.option(
    "--retry-delay",
    type=Finite(min=0),
    default=DEFAULT_RETRY_DELAY,
    show_default=True,
    help="First backoff ceiling in seconds (doubles).",
)
@click.option(
    "--timeout",
    type=Finite(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option(
    "--max-rps",
    type=Finite(min=0, min_open=True),
    help="At most this many requests per second.",
)
@click.option(
    "--max-response-mb",
    type=Finite(min=0, min_open=True),
    default=DEFAULT_MAX_RESPONSE_BYTES / 2**20,
    show_default=True,
    help="Largest answer read, in MiB; a bigger one fails its row (response_too_large).",
)
@click.option(
    "--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True
)
@click.option(
    "--max-outage",
    type=Finite(min=0),
    default=DEFAULT_MAX_OUTAGE,
    show_default=True,
    help="Seconds to wait out an unavailable server before stopping (exit 3).",
)
@click.option(
    "--max-error-rate",
    type=Finite(0, 1),
    default=0.0,
    show_default=True,
    help="Error rows / sent rows above which the exit code is 1.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Rows per checkpoint chunk.",
)
@click.option(
    "--flush-interval",
    type=Finite(min=0, min_open=True),
    default=DEFAULT_FLUSH_INTERVAL,
    show_default=True,
    help="Seconds between checkpoint commits.",
)
@click.option("--overwrite", is_flag=True, help="Discard any checkpoint or output and start over.")
@click.option(
    "--wait-for-lock",
    is_flag=True,
    help="If another run is writing the same output, wait for it instead of exiting 3.",
)
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Re-run only the rows of the existing output whose status is error.",
)
@click.option(
    "--dry-run", is_flag=True, help="Validate, show the first prompts, count rows; send nothing."
)
@click.option(
    "--local-server",
    is_flag=True,
    help="Run against the bundled reference server on a free loopback port.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: bar on a terminal, log lines otherwise).",
)
@click.option(
    "--progress-interval",
    type=Finite(min=0, min_open=True),
    default=DEFAULT_PROGRESS_INTERVAL,
    show_default=True,
    help="Seconds between progress log lines when not on a terminal (cron, Airflow).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Also write the summary as JSON here (for Airflow XCom).",
)
def run(input_path: str | None, api_key_file: str | None, **options: Any) -> None:
    """Run every row of INPUT through the model; write INPUT plus result columns.

    Re-running the same command after a crash resumes where it stopped.
    Exit codes: 0 done; 1 error rate above --max-error-rate; 2 bad input or options;
    3 stopped early, resumable; 130/143 interrupted.

    \b
    Example:
      llvm-batch run sample_data/prompts.parquet --local-server --model llvm-model-1
      llvm-batch run prompts.parquet --protocol openai --base-url http://127.0.0.1:8080/v1 -m M
      llvm-batch run --config job.toml --max-retries 5
    """
    if input_path is None:
        raise click.UsageError("give an INPUT file, or `input = ...` in the --config file")
    setup_logging(options["debug"])
    summary_path = options["summary_json"]
    options["api_key"] = read_key_file(api_key_file)
    options["max_response_bytes"] = max(1, int(options.pop("max_response_mb") * 2**20))
    try:
        if options.pop("local_server"):  # TEMP: replaced by the CLI bundle work
            from ..server import ReferenceServer, ServerThread

            wire = "llvm" if (options["protocol"] or "llvm") == "llvm" else "openai"
            with ServerThread(ReferenceServer(protocol=wire)) as server:
                options["base_url"] = server.url
                summary = run_batch(input_path, options.pop("output"), **options)
        else:
            summary = run_batch(input_path, options.pop("output"), **options)
    except (InputError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    if summary.preview:
        for line in summary.preview:
            click.echo(line)
    if not options["quiet"]:
        for line in summary.lines():
            click.echo(line, err=True)
    if summary_path:
        atomic_write_bytes(summary_path, summary.to_json().encode())
    sys.exit(summary.exit_code)
