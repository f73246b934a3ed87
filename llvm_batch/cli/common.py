"""What the ``llvm-batch`` commands share: server options, the API key file, client, errors.

Library errors become click errors here and only here: bad input, options or configuration
exit 2 with one line (:class:`UsageFailure`); a failed server call exits 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import ENV_API_KEY, ENV_BASE_URL, ENV_PROTOCOL, PROTOCOL_NAMES
from ..errors import AuthenticationError, LLVMConnectionError, LLVMError, LLVMTimeoutError, safe_url

if TYPE_CHECKING:  # the client (aiohttp) is imported when a command runs, not for --help
    from ..sync import LLVMClient

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A usage, configuration or input error: exit 2, nothing sent."""

    exit_code = 2


def read_key_file(path: str | None) -> str | None:
    """The API key in ``path`` (stripped), None without a path; exit 2 if unreadable."""
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


def stack_options(func: F, *options: Callable[[F], F]) -> F:
    """``func`` with click ``options`` applied, shown by ``--help`` in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def server_options(func: F) -> F:
    """--base-url, --protocol, --api-key-file, --debug: where the server is, how to talk to it."""
    return stack_options(
        func,
        click.option(
            "--base-url",
            help=f"Server URL, e.g. http://127.0.0.1:8000 (default: ${ENV_BASE_URL}).",
        ),
        click.option(
            "--protocol",
            type=click.Choice(PROTOCOL_NAMES, case_sensitive=False),
            help=f"Wire protocol (default: ${ENV_PROTOCOL}, else llvm). openai: an "
            "OpenAI-compatible server, --base-url ending in /v1; openai-completions: plain "
            "prompts to /completions.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False),
            help=f"File holding the API key (default: ${ENV_API_KEY}). Never pass a key as a flag.",
        ),
        click.option(
            "--debug", is_flag=True, help="Log every request attempt to stderr (API key redacted)."
        ),
    )


def setup_logging(debug: bool) -> None:
    """With ``--debug``, show llvm_batch's per-attempt log lines on stderr."""
    if debug:
        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
        logging.getLogger("llvm_batch").setLevel(logging.DEBUG)


KEY_HINT = f"set {ENV_API_KEY} or --api-key-file"
#: A query command answers within about a second against a server that is down: one quick
#: retry (a restart, a blip), no breaker.
QUICK: dict[str, Any] = {"max_retries": 1, "retry_delay": 0.25, "breaker": False}


def make_client(
    base_url: str | None, api_key_file: str | None, debug: bool, protocol: str | None
) -> LLVMClient:
    """A sync client for one quick question, from the server options; a bad value exits 2."""
    from ..sync import LLVMClient

    setup_logging(debug)
    try:
        key = read_key_file(api_key_file)
        return LLVMClient(
            base_url=base_url,
            api_key=key,
            debug=debug,
            protocol=protocol,
            **QUICK,
        )
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None


def fail(exc: LLVMError, client: LLVMClient) -> click.ClickException:
    """A failed server call: its readable message (with a hint where one helps), exit 1."""
    message = str(exc)
    if isinstance(exc, (LLVMConnectionError, LLVMTimeoutError)):
        url = safe_url(client.config.api_root)
        message += (
            f"\nhint: is the server running at {url}? "
            f"Set --base-url or ${ENV_BASE_URL} to where it listens."
        )
    elif isinstance(exc, AuthenticationError):
        message += f"\nhint: {KEY_HINT}"
    return click.ClickException(message)
