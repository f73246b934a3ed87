"""Per-client debug output: a client made with ``debug=True`` shows its attempt lines.

Nothing here changes a logger's level or handlers, so other clients and other libraries stay
as quiet as they were. Where the application configured logging, the lines go through the
``llvm_batch`` logger to its handlers; in a plain script, where they would meet Python's
last-resort handler (WARNING and up) and vanish, they go to stderr directly.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

logger = logging.getLogger("llvm_batch")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a notebook's)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s llvm_batch DEBUG %(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


_STDERR = _StderrHandler()


def debug_log(message: str, *args: Any) -> None:
    """Emit one debug line for a client that asked for them (API key never in ``args``)."""
    record = logger.makeRecord(logger.name, logging.DEBUG, "llvm_batch", 0, message, args, None)
    if logger.hasHandlers():
        logger.handle(record)
    else:
        _STDERR.handle(record)
