"""The elastic worker pool: a worker per slot, stand-ins for sleepers, retired on wake."""

from __future__ import annotations

import asyncio

import pytest

from llvm_batch.batch.workers import WorkerPool


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


class Sleeps:
    """A sleep the test releases by hand."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Event] = []

    async def __call__(self, delay: float) -> None:
        wake = asyncio.Event()
        self.waiting.append(wake)
        await wake.wait()


def test_a_sleeping_worker_gets_a_stand_in_that_retires_when_it_wakes() -> None:
    async def scenario() -> None:
        sleeps = Sleeps()
        items: asyncio.Queue[str | None] = asyncio.Queue()
        done: list[str] = []

        async def body(pool: WorkerPool) -> None:
            while (item := await items.get()) is not None:
                if item == "slow":
                    await pool.sleep(1.0)
                done.append(item)
                if pool.retire():
                    return

        pool = WorkerPool(body, size=2, limit=10, sleep=sleeps)
        pool.start()
        assert len(pool.tasks) == 2
        items.put_nowait("slow")
        await asyncio.sleep(0)
        assert len(pool.tasks) == 3  # two at work and a stand-in for the sleeper
        for i in range(5):
            items.put_nowait(f"row {i}")
        await asyncio.sleep(0.01)
        assert done == [f"row {i}" for i in range(5)]  # nobody waited for the sleeper
        sleeps.waiting[0].set()
        await asyncio.sleep(0.01)
        assert done[-1] == "slow"
        assert len(pool.tasks) == 2  # the next to finish a row retired
        for _ in range(2):
            items.put_nowait(None)
        await pool.join()
        assert pool.tasks == set() and pool.most_seen == 3

    run(scenario())


def test_the_pool_never_grows_past_its_limit() -> None:
    async def scenario() -> None:
        sleeps = Sleeps()

        async def body(pool: WorkerPool) -> None:
            await pool.sleep(1.0)  # every worker sleeps: each asks for a stand-in

        pool = WorkerPool(body, size=2, limit=5, sleep=sleeps)
        pool.start()
        await asyncio.sleep(0.01)
        assert len(pool.tasks) == 5 and pool.most_seen == 5
        assert len(sleeps.waiting) == 5
        for wake in sleeps.waiting:
            wake.set()
        await pool.join()
        assert pool.most_seen == 5

    run(scenario())


def test_a_failing_worker_fails_the_join_after_the_others_end() -> None:
    async def scenario() -> list[int]:
        ended: list[int] = []

        async def body(pool: WorkerPool) -> None:
            if len(ended) == 0:
                ended.append(0)
                raise RuntimeError("a bug in the worker")
            await asyncio.sleep(0.01)
            ended.append(1)

        pool = WorkerPool(body, size=3, limit=3)
        pool.start()
        with pytest.raises(RuntimeError, match="a bug in the worker"):
            await pool.join()
        return ended

    assert run(scenario()) == [0, 1, 1]


def test_cancel_stops_every_worker_and_starts_no_stand_in() -> None:
    async def scenario() -> None:
        sleeps = Sleeps()

        async def body(pool: WorkerPool) -> None:
            await asyncio.Event().wait()

        pool = WorkerPool(body, size=3, limit=9, sleep=sleeps)
        pool.start()
        await asyncio.sleep(0)
        pool.cancel()
        sleeper = asyncio.ensure_future(pool.sleep(1.0))
        await asyncio.sleep(0)
        await pool.join()
        assert pool.tasks == set() and pool.most_seen == 3
        sleeper.cancel()

    run(scenario())


def test_sizes_are_checked() -> None:
    async def body(pool: WorkerPool) -> None:
        return None

    with pytest.raises(ValueError, match="size <= limit"):
        WorkerPool(body, size=0, limit=4)
    with pytest.raises(ValueError, match="size <= limit"):
        WorkerPool(body, size=5, limit=4)
