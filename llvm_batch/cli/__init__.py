"""The ``llvm-batch`` command line: a thin click layer over the library.

``run`` exits with its summary's code (DESIGN.md "Exit codes"); every command's help ends
with an example.
"""

from __future__ import annotations

import click

from .query import chat, info, models, ping
from .run import run
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llvm-batch")
def main() -> None:
    """Run tables of prompts through an LLVM inference server, reliably.

    \b
    Example:
      llvm-batch run prompts.parquet --model llvm-model-1 --base-url http://127.0.0.1:8000
    """


for command in (run, models, info, ping, chat, serve):
    main.add_command(command)

__all__ = ["main"]
