"""``llvm-batch run --local-server``: the bundled reference server, for the length of a run.

The server (and with it aiohttp) is imported only when one is started.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import DEFAULT_PROTOCOL, resolve_protocol
from .common import UsageFailure


@contextmanager
def server_url(
    local_server: bool, base_url: str | None, *, protocol: str | None, dry_run: bool
) -> Iterator[str | None]:
    """The base URL to run against, for the length of the block.

    ``--base-url``, or with ``--local-server`` the bundled reference server's: started on a
    free loopback port, stopped when the block ends, however it ends.
    """
    if not local_server:
        yield base_url
        return
    if base_url is not None:
        raise UsageFailure(
            "--local-server runs the bundled reference server on a free loopback port; "
            "drop --base-url (or base-url in the --config file) to use it"
        )
    if dry_run:  # nothing is sent, so nothing needs to answer
        yield None
        return
    wire = "llvm" if protocol_in_use(protocol) == DEFAULT_PROTOCOL else "openai"
    from ..server import ServerThread

    with ServerThread(protocol=wire) as server:
        yield server.url


def protocol_in_use(protocol: str | None) -> str:
    """``--protocol``, else ``$LLVM_PROTOCOL``, else llvm; a bad value exits 2."""
    try:
        return resolve_protocol(protocol)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
