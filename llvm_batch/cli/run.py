"""``llvm-batch run``: the batch job, a thin layer over :func:`llvm_batch.run_batch`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..batch import run_batch
from ..batch.sinks import atomic_write_bytes
from ..errors import InputError
from ..options import DEFAULT_PROTOCOL, ENV_PROTOCOL, parse_protocol
from .bundles import (
    checkpoint_options,
    output_options,
    prompt_options,
    retry_options,
    sampling_options,
)
from .common import UsageFailure, read_key_file, server_options, setup_logging
from .jobfile import load_job_file


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
    summary_path = options["summary_json"]
    options["api_key"] = read_key_file(api_key_file)
    options["max_response_bytes"] = max(1, int(options.pop("max_response_mb") * 2**20))
    output = options.pop("output")
    with server_url(local_server, options.pop("base_url"), options) as base_url:
        try:
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


@contextmanager
def server_url(
    local_server: bool, base_url: str | None, options: dict[str, Any]
) -> Iterator[str | None]:
    """The base URL to run against, for the length of the block.

    ``--base-url``, or with ``--local-server`` the bundled reference server's: started on a
    free loopback port, stopped when the block ends, however it ends.
    """
    if not local_server:
        yield base_url
        return
    if base_url is not None:
        raise UsageFailure(
            "--local-server runs the bundled reference server on a free loopback port; "
            "drop --base-url (or base-url in the --config file) to use it"
        )
    if options["dry_run"]:  # nothing is sent, so nothing needs to answer
        yield None
        return
    wire = "llvm" if protocol_in_use(options["protocol"]) == DEFAULT_PROTOCOL else "openai"
    from ..server import ServerThread  # aiohttp, only when a local server runs

    with ServerThread(protocol=wire) as server:
        yield server.url


def protocol_in_use(protocol: str | None) -> str:
    """``--protocol``, else ``$LLVM_PROTOCOL``, else llvm; a bad value exits 2."""
    if protocol is not None:
        return parse_protocol(protocol)
    try:
        return parse_protocol(os.environ.get(ENV_PROTOCOL) or DEFAULT_PROTOCOL)
    except ValueError as exc:
        raise UsageFailure(f"{exc} (from {ENV_PROTOCOL})") from None
