"""The ``llvm-batch`` command line: a thin click layer over the library.

``run`` exits with its summary's code (DESIGN.md "Exit codes"); every command's help ends
with an example. Each command's module (and with it aiohttp, pyarrow or pandas) is imported
only when that command runs, so ``--help`` and the quick commands start fast.
"""

from __future__ import annotations

import importlib

import click

#: name -> (module, the command's short help, shown by ``llvm-batch --help`` without importing
#: the module); a test keeps each equal to the command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "Run every row of INPUT through the model; write INPUT plus result columns."),
    "models": ("query", "List the server's models, one per line."),
    "info": (
        "query",
        "Show what the server says about MODEL (default: $LLVM_DEFAULT_MODEL), as JSON.",
    ),
    "ping": (
        "query",
        "Exit 0 if the server answers, 1 if not (unreachable, or the API key refused).",
    ),
    "chat": (
        "query",
        "Send one chat message to MODEL (default: $LLVM_DEFAULT_MODEL) and print the answer.",
    ),
    "serve": ("serve", "Run the reference server (deterministic answers, optional faults)."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when used (click's documented lazy-loading idiom)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__name__}.{COMMANDS[cmd_name][0]}")
        command: click.Command = getattr(module, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, short if len(short) <= limit else short[: limit - 3].rsplit(" ", 1)[0] + "...")
            for name, (_, short) in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="llvm-batch")
def main() -> None:
    """Run tables of prompts through an LLVM inference server, reliably.

    \b
    Example:
      llvm-batch run prompts.parquet --model llvm-model-1 --base-url http://127.0.0.1:8000
    """


__all__ = ["main"]
