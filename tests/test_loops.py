"""run_sync and the loop plumbing: one bridge from plain code to a coroutine, in and out of a
running loop, on uvloop unless told otherwise."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llvm_batch import AsyncLLVMClient, ServerError, run_sync
from llvm_batch.loops import ENV_EVENT_LOOP, LoopThread


async def add(a: int, b: int) -> tuple[int, int]:
    await asyncio.sleep(0)
    return a + b, threading.get_ident()


async def fail() -> None:
    await asyncio.sleep(0)
    raise ServerError("boom", status=500)


def test_run_sync_outside_a_loop_runs_here() -> None:
    value, thread = run_sync(add(2, 3))
    assert value == 5
    assert thread == threading.get_ident()


def test_run_sync_inside_a_running_loop_runs_on_another_thread() -> None:
    async def cell():
        return run_sync(add(4, 5)), threading.get_ident()

    (value, worker), caller = asyncio.run(cell())
    assert value == 9
    assert worker != caller


@pytest.mark.parametrize("inside_a_loop", [False, True])
def test_run_sync_hands_errors_to_the_caller(inside_a_loop) -> None:
    async def cell():
        return run_sync(fail())

    with pytest.raises(ServerError, match="boom"):
        if inside_a_loop:
            asyncio.run(cell())
        else:
            run_sync(fail())


def test_run_sync_drives_the_async_client_inside_a_loop(server) -> None:
    async def use_client():
        async with AsyncLLVMClient(server.url) as client:
            return await client.model_ids()

    async def cell():
        return run_sync(use_client())

    assert asyncio.run(cell()) == run_sync(use_client()) == ["llvm-model-1", "llvm-model-2"]


async def _loop_kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_run_sync_runs_on_uvloop_unless_told_to_use_asyncio(monkeypatch) -> None:
    assert run_sync(_loop_kind()) == "uvloop"
    monkeypatch.setenv(ENV_EVENT_LOOP, "asyncio")
    assert run_sync(_loop_kind()) == "asyncio"


def test_a_loop_thread_refuses_to_wait_on_itself() -> None:
    thread = LoopThread()
    try:

        async def wait_on_own_loop() -> None:
            thread.run(add(1, 1))

        with pytest.raises(RuntimeError, match="await instead"):
            thread.run(wait_on_own_loop())
        assert thread.run(add(1, 2))[0] == 3
    finally:
        thread.stop()
    assert thread.loop.is_closed()
