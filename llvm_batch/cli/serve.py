"""``llvm-batch serve``: the reference server, for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from ..config import ENV_API_KEY
from ..server import Faults, ReferenceServer, serve_forever
from .common import UsageFailure


@click.command()
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
@click.option(
    "--capacity",
    type=click.IntRange(min=0),
    default=0,
    help="Inferences served at once; more are answered 503 at once (0: no limit).",
)
@click.option(
    "--outage-at",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds after start when an outage begins (every inference answered 503).",
)
@click.option(
    "--outage-s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="How long the outage of --outage-at lasts, in seconds.",
)
@click.option(
    "--protocol",
    type=click.Choice(["llvm", "openai"]),
    default="llvm",
    show_default=True,
    help="The protocol of the printed URL (openai: the /v1 root).",
)
def serve(
    host: str, port: int, model_list: str, require_api_key: bool, protocol: str, **faults: Any
) -> None:
    """Run the reference server (deterministic answers, optional faults).

    It speaks both protocols: LLVM at the root, OpenAI under /v1; --protocol picks the
    URL it prints.

    \b
    Example:
      llvm-batch serve --port 8000 --error-rate 0.1
      llvm-batch serve --protocol openai --port 8000 --rate-limit-rate 0.05
      llvm-batch serve --latency 0.02 --capacity 16 --outage-at 10 --outage-s 4
    """
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
            protocol=protocol,
        )
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    try:
        asyncio.run(serve_forever(server))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UsageFailure(f"can't listen on {host}:{port}: {exc.strerror or exc}") from None
