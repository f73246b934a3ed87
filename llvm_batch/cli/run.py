"""``llvm-batch run``: the batch job, a thin layer over :func:`llvm_batch.run_batch`."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..batch import run_batch
from ..batch.durable import atomic_write_bytes
from ..batch.target import check_writable
from ..errors import InputError
from .bundles import (
    checkpoint_options,
    output_options,
    prompt_options,
    retry_options,
    sampling_options,
)
from .common import UsageFailure, read_key_file, server_options, setup_logging
from .jobfile import load_job_file
from .local import server_url


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
@output_options
@prompt_options
@sampling_options
@server_options
@click.option(
    "--local-server",
    is_flag=True,
    help="Run against the bundled reference server on a free loopback port.",
)
@retry_options
@checkpoint_options
def run(
    input_path: str | None, api_key_file: str | None, local_server: bool, **options: Any
) -> None:
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
    summary_path = options.pop("summary_json")
    options["api_key"] = read_key_file(api_key_file)
    options["max_response_bytes"] = max(1, int(options.pop("max_response_mb") * 2**20))
    output = options.pop("output")
    server = server_url(
        local_server,
        options.pop("base_url"),
        protocol=options["protocol"],
        dry_run=options["dry_run"],
    )
    with server as base_url:
        try:
            if summary_path:
                check_writable(summary_path, "--summary-json file")
            summary = run_batch(input_path, output, base_url=base_url, **options)
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
