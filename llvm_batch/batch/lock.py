"""One writer per output: an OS lock (``flock``) on the output's staging directory.

Two runs on one output (a cron tick overlapping a manual run, two Airflow retries) would send
every row twice and sweep each other's parts. The run that holds the lock is the only one that
reads, writes or sweeps the staging directory; the lock dies with its process (kill -9 too),
so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import Awaitable, Callable

POLL_S = 0.2
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class OutputLocked(Exception):
    """Another live run holds the lock on this output."""


class OutputLock:
    """The lock on ``directory`` (created if missing); :meth:`acquire` it, then :meth:`release`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another run holds it."""
        while True:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise
                # A file system without flock (some network mounts): run unguarded, as
                # before locks existed, rather than not at all.
                self._fd = fd
                return True
            except BaseException:
                os.close(fd)
                raise
            # The holder may have finished and removed the directory while we opened it: a
            # lock on a removed directory guards nothing, so take the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.directory))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)

    async def acquire(
        self,
        *,
        wait: bool,
        on_wait: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> bool:
        """Take the lock (True); :class:`OutputLocked` if held elsewhere and not ``wait``.

        When waiting, ``on_wait()`` is called once, as the wait starts.
        """
        waited = False
        while not self.try_acquire():
            if not wait:
                raise OutputLocked(self.directory)
            if not waited:
                on_wait()
                waited = True
            await sleep(POLL_S)
        return True

    def release(self, *, remove_if_empty: bool = False) -> None:
        """Let go of the lock; drop the directory first if this run left nothing in it."""
        if self._fd is None:
            return
        if remove_if_empty:
            try:
                os.rmdir(self.directory)
            except OSError:
                pass  # holds a checkpoint (or is gone): keep it
        os.close(self._fd)
        self._fd = None
