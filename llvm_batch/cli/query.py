"""Talking to a server: ``models``, ``info``, ``ping``, ``chat``.

They answer within about a second when the server is down (one quick retry, then a hint),
and the model comes from MODEL or ``LLVM_DEFAULT_MODEL``.
"""

from __future__ import annotations

import json
import sys

import click

from ..errors import AuthenticationError, LLVMError, safe_url
from .common import KEY_HINT, UsageFailure, fail, make_client, server_options


@click.command()
@server_options
def models(
    base_url: str | None, api_key_file: str | None, debug: bool, protocol: str | None
) -> None:
    """List the server's models, one per line.

    \b
    Example:
      llvm-batch models --base-url http://127.0.0.1:8000
      llvm-batch models --protocol openai --base-url http://127.0.0.1:8080/v1
    """
    with make_client(base_url, api_key_file, debug, protocol) as client:
        try:
            names = client.model_ids()
        except LLVMError as exc:
            raise fail(exc, client) from None
    for name in names:
        click.echo(name)


@click.command()
@click.argument("model", required=False)
@server_options
def info(
    model: str | None,
    base_url: str | None,
    api_key_file: str | None,
    debug: bool,
    protocol: str | None,
) -> None:
    """Show what the server says about MODEL (default: $LLVM_DEFAULT_MODEL), as JSON.

    \b
    Example:
      llvm-batch info llvm-model-1
    """
    with make_client(base_url, api_key_file, debug, protocol) as client:
        try:
            details = client.get_model_info(model)
        except LLVMError as exc:
            raise fail(exc, client) from None
        except ValueError as exc:  # no model given anywhere
            raise UsageFailure(str(exc)) from None
    click.echo(json.dumps(details, indent=2, sort_keys=True))


@click.command()
@server_options
def ping(base_url: str | None, api_key_file: str | None, debug: bool, protocol: str | None) -> None:
    """Exit 0 if the server answers, 1 if not (unreachable, or the API key refused).

    \b
    Example:
      llvm-batch ping --base-url http://127.0.0.1:8000 && echo up
    """
    with make_client(base_url, api_key_file, debug, protocol) as client:
        url = safe_url(client.config.api_root)
        try:
            client.ping()
        except AuthenticationError as exc:
            problem = f"answers, but refused the API key (HTTP {exc.status}); {KEY_HINT}"
        except LLVMError as exc:
            problem = f"unreachable: {fail(exc, client).message}"
        else:
            click.echo(f"{url}: ok")
            return
    click.echo(f"{url}: {problem}", err=True)
    sys.exit(1)


@click.command()
@click.argument("words", nargs=-1, required=True, metavar="[MODEL] TEXT")
@click.option("--system", help="A system message before TEXT.")
@click.option("--max-tokens", type=click.IntRange(min=0))
@click.option("--temperature", type=float)
@server_options
def chat(
    words: tuple[str, ...],
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    base_url: str | None,
    api_key_file: str | None,
    debug: bool,
    protocol: str | None,
) -> None:
    """Send one chat message to MODEL (default: $LLVM_DEFAULT_MODEL) and print the answer.

    \b
    Example:
      llvm-batch chat llvm-model-1 "What is LLVM?"
      LLVM_DEFAULT_MODEL=llvm-model-1 llvm-batch chat "What is LLVM?"
    """
    if len(words) > 2:
        raise UsageFailure("chat takes [MODEL] TEXT; quote TEXT if it has spaces")
    model, text = (None, words[0]) if len(words) == 1 else words
    messages = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with make_client(base_url, api_key_file, debug, protocol) as client:
        try:
            answer = client.chat(model, messages, max_tokens=max_tokens, temperature=temperature)
        except LLVMError as exc:
            raise fail(exc, client) from None
        except ValueError as exc:  # no model given anywhere
            raise UsageFailure(str(exc)) from None
    content = answer["content"]
    click.echo(content if isinstance(content, str) else json.dumps(content))
