"""The ``llvm-batch`` command line: a thin click layer over the library.

Library errors become click errors here and only here: bad input, options or configuration
exit 2 with one line; ``run`` exits with its summary's code (DESIGN.md "Exit codes").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .batch import run_batch
from .batch.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_OUTAGE,
)
from .batch.sinks import atomic_write_bytes
from .errors import InputError, LLVMError
from .options import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_DEFAULT_MODEL,
)
from .sync import LLVMClient

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A usage, configuration or input error: exit 2, nothing sent."""

    exit_code = 2


def _read_key_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise UsageFailure(f"can't read the API key file {path!r}: {exc.strerror}") from None
    if not key:
        raise UsageFailure(f"the API key file {path!r} is empty")
    return key


def server_options(func: F) -> F:
    """--base-url, --api-key-file, --debug: where the server is and how to talk to it."""
    func = click.option(
        "--debug", is_flag=True, help="Log every request attempt to stderr (API key redacted)."
    )(func)
    func = click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False),
        help=f"File holding the API key (default: ${ENV_API_KEY}). Never pass a key as a flag.",
    )(func)
    func = click.option(
        "--base-url",
        envvar=ENV_BASE_URL,
        show_envvar=True,
        help="Server URL, e.g. http://127.0.0.1:8000.",
    )(func)
    return func


def _setup_logging(debug: bool) -> None:
    if debug:
        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
        logging.getLogger("llvm_batch").setLevel(logging.DEBUG)


def _client(base_url: str | None, api_key_file: str | None, debug: bool, **kw: Any) -> LLVMClient:
    _setup_logging(debug)
    try:
        return LLVMClient(
            base_url=base_url, api_key=_read_key_file(api_key_file), debug=debug, **kw
        )
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None


def _fail(exc: LLVMError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llvm-batch")
def main() -> None:
    """Run tables of prompts through an LLVM inference server, reliably.

    \b
    Example:
      llvm-batch run prompts.parquet --model llvm-model-1 --base-url http://127.0.0.1:8000
    """


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


@main.command()
@click.argument("input_path", metavar="INPUT")
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
@click.option("-m", "--model", envvar=ENV_DEFAULT_MODEL, show_envvar=True, help="Model id.")
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
@click.option("--temperature", type=float, help="temperature for every row.")
@click.option("--top-k", type=click.IntRange(min=0), help="top_k for every row.")
@click.option("--top-p", type=click.FloatRange(0, 1), help="top_p for every row.")
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
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
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
    type=click.FloatRange(min=0),
    default=DEFAULT_RETRY_DELAY,
    show_default=True,
    help="First backoff ceiling in seconds (doubles).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many requests per second.",
)
@click.option(
    "--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True
)
@click.option(
    "--max-outage",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_OUTAGE,
    show_default=True,
    help="Seconds to wait out an unavailable server before stopping (exit 3).",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
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
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_FLUSH_INTERVAL,
    show_default=True,
    help="Seconds between checkpoint commits.",
)
@click.option("--overwrite", is_flag=True, help="Discard any checkpoint or output and start over.")
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
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Also write the summary as JSON here (for Airflow XCom).",
)
def run(input_path: str, api_key_file: str | None, **options: Any) -> None:
    """Run every row of INPUT through the model; write INPUT plus result columns.

    Re-running the same command after a crash resumes where it stopped.
    Exit codes: 0 done; 1 error rate above --max-error-rate; 2 bad input or options;
    3 stopped early, resumable; 130/143 interrupted.

    \b
    Example:
      llvm-batch run sample_data/prompts.parquet --local-server --model llvm-model-1
    """
    _setup_logging(options["debug"])
    summary_path = options["summary_json"]
    options["api_key"] = _read_key_file(api_key_file)
    try:
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


@main.command()
@server_options
def models(base_url: str | None, api_key_file: str | None, debug: bool) -> None:
    """List the server's models, one per line.

    \b
    Example:
      llvm-batch models --base-url http://127.0.0.1:8000
    """
    with _client(base_url, api_key_file, debug) as client:
        try:
            names = client.list_models()
        except LLVMError as exc:
            raise _fail(exc) from None
    for name in names:
        click.echo(name)


@main.command()
@click.argument("model")
@server_options
def info(model: str, base_url: str | None, api_key_file: str | None, debug: bool) -> None:
    """Show what the server says about MODEL, as JSON.

    \b
    Example:
      llvm-batch info llvm-model-1
    """
    with _client(base_url, api_key_file, debug) as client:
        try:
            details = client.get_model_info(model)
        except LLVMError as exc:
            raise _fail(exc) from None
    click.echo(json.dumps(details, indent=2, sort_keys=True))


@main.command()
@server_options
def ping(base_url: str | None, api_key_file: str | None, debug: bool) -> None:
    """Exit 0 if the server answers, 1 if not.

    \b
    Example:
      llvm-batch ping --base-url http://127.0.0.1:8000 && echo up
    """
    with _client(base_url, api_key_file, debug) as client:
        ok = client.test_endpoint()
        url = client.config.api_root
    click.echo(f"{url}: {'ok' if ok else 'unreachable'}", err=not ok)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("model")
@click.argument("text")
@click.option("--system", help="A system message before TEXT.")
@click.option("--max-tokens", type=click.IntRange(min=0))
@click.option("--temperature", type=float)
@server_options
def chat(
    model: str,
    text: str,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    base_url: str | None,
    api_key_file: str | None,
    debug: bool,
) -> None:
    """Send one chat message to MODEL and print the answer.

    \b
    Example:
      llvm-batch chat llvm-model-1 "What is LLVM?"
    """
    messages = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with _client(base_url, api_key_file, debug) as client:
        try:
            answer = client.chat(model, messages, max_tokens=max_tokens, temperature=temperature)
        except LLVMError as exc:
            raise _fail(exc) from None
    content = answer["content"]
    click.echo(content if isinstance(content, str) else json.dumps(content))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--models",
    "model_list",
    default="llvm-model-1,llvm-model-2",
    show_default=True,
    help="Comma-separated model ids.",
)
@click.option(
    "--require-api-key", is_flag=True, help=f"Require the key in ${ENV_API_KEY} (401 otherwise)."
)
@click.option(
    "--latency", type=click.FloatRange(min=0), default=0.0, help="Seconds added to each inference."
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of inferences answered 503.",
)
@click.option(
    "--rate-limit-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction answered 429."
)
@click.option(
    "--retry-after", type=click.FloatRange(min=0), default=1.0, help="Retry-After seconds on 429."
)
@click.option(
    "--reset-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of connections reset."
)
@click.option(
    "--bad-json-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of malformed JSON bodies.",
)
@click.option(
    "--fail-first",
    type=click.IntRange(min=0),
    default=0,
    help="Fail each request's first N attempts with 503.",
)
@click.option("--seed", type=int, default=0, help="Seed of the fault choices.")
def serve(host: str, port: int, model_list: str, require_api_key: bool, **faults: Any) -> None:
    """Run the reference LLVM server (deterministic answers, optional faults).

    \b
    Example:
      llvm-batch serve --port 8000 --error-rate 0.1
    """
    from .server import Faults, ReferenceServer, serve_forever

    api_key = os.environ.get(ENV_API_KEY) if require_api_key else None
    if require_api_key and not api_key:
        raise UsageFailure(f"--require-api-key needs the key in ${ENV_API_KEY}")
    try:
        server = ReferenceServer(
            host,
            port,
            models=[m.strip() for m in model_list.split(",") if m.strip()],
            api_key=api_key,
            faults=Faults(**faults),
        )
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    try:
        asyncio.run(serve_forever(server))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UsageFailure(f"can't listen on {host}:{port}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # pragma: no cover
    main()
