"""Showing a run's progress: a tqdm bar on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any


class Progress:
    """Counts finished rows and shows them; ``mode`` is ``bar``, ``lines`` or ``off``."""

    def __init__(
        self,
        total: int | None,
        *,
        mode: str,
        interval: float = 10.0,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.total = total
        self.mode = mode
        self.interval = interval
        self.stream = stream or sys.stderr
        self._clock = clock
        self._status = status or (dict)
        self._started = clock()
        self._last_line = self._started
        self._last_postfix = 0.0
        self.done = 0
        self._bar: Any = None
        if mode == "bar":
            self._bar = _tqdm()(total=total, unit="row", file=self.stream, dynamic_ncols=True)

    @staticmethod
    def choose_mode(progress: bool | None, quiet: bool, stream: IO[str] | None = None) -> str:
        """``off`` if quiet or disabled, ``bar`` on a terminal (or when forced), else ``lines``."""
        if quiet or progress is False:
            return "off"
        stream = stream or sys.stderr
        if progress is True or (hasattr(stream, "isatty") and stream.isatty()):
            return "bar"
        return "lines"

    def advance(self, rows: int = 1) -> None:
        self.done += rows
        if self.mode == "off":
            return
        now = self._clock()
        if self._bar is not None:
            self._bar.update(rows)
            if now - self._last_postfix >= 0.5:
                self._last_postfix = now
                self._bar.set_postfix(self._status(), refresh=False)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self.line()

    def line(self) -> None:
        """Write one progress line (the no-terminal form)."""
        elapsed = self._clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", eta {max(0.0, (self.total - self.done) / rate):.0f} s"
        status = ", ".join(f"{k} {v}" for k, v in self._status().items())
        print(
            f"llvm-batch: {self.done}{of} rows, {rate:.1f} rows/s{eta}; {status}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._status(), refresh=False)
            self._bar.close()
            self._bar = None


def _tqdm() -> Any:
    """tqdm's notebook bar in Jupyter when ipywidgets can draw it, the text bar otherwise."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm

        return tqdm
    from tqdm.auto import tqdm as auto

    return auto
