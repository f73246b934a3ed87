"""Talking to a server: ``models``, ``info``, ``ping``, ``chat``."""

from __future__ import annotations

import json
import sys

import click

from ..errors import LLVMError
from .common import fail, make_client, server_options


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
            names = client.list_models()
        except LLVMError as exc:
            raise fail(exc) from None
    for name in names:
        click.echo(name)


@click.command()
@click.argument("model")
@server_options
def info(
    model: str,
    base_url: str | None, api_key_file: str | None, debug: bool, protocol: str | None
) -> None:
    """Show what the server says about MODEL, as JSON.

    \b
    Example:
      llvm-batch info llvm-model-1
    """
    with make_client(base_url, api_key_file, debug, protocol) as client:
        try:
            details = client.get_model_info(model)
        except LLVMError as exc:
            raise fail(exc) from None
    click.echo(json.dumps(details, indent=2, sort_keys=True))


@click.command()
@server_options
def ping(
    base_url: str | None, api_key_file: str | None, debug: bool, protocol: str | None
) -> None:
    """Exit 0 if the server answers, 1 if not.

    \b
    Example:
      llvm-batch ping --base-url http://127.0.0.1:8000 && echo up
    """
    with make_client(base_url, api_key_file, debug, protocol) as client:
        ok = client.test_endpoint()
        url = client.config.api_root
    click.echo(f"{url}: {'ok' if ok else 'unreachable'}", err=not ok)
    sys.exit(0 if ok else 1)


@click.command()
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
    protocol: str | None,
) -> None:
    """Send one chat message to MODEL and print the answer.

    \b
    Example:
      llvm-batch chat llvm-model-1 "What is LLVM?"
    """
    messages = [{"role": "user", "content": text}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    with make_client(base_url, api_key_file, debug, protocol) as client:
        try:
            answer = client.chat(model, messages, max_tokens=max_tokens, temperature=temperature)
        except LLVMError as exc:
            raise fail(exc) from None
    content = answer["content"]
    click.echo(content if isinstance(content, str) else json.dumps(content))
