"""RowFeed: FIFO order, backpressure at ``low``, drain on close, wake-up on clear."""

from __future__ import annotations

import asyncio

import pytest

from llvm_batch.batch.feed import RowFeed


def test_rows_come_out_in_order_and_close_drains_before_none() -> None:
    async def scenario() -> list[int | None]:
        feed: RowFeed[int] = RowFeed(low=2)
        feed.put_many([1, 2, 3])
        feed.close()
        return [await feed.get() for _ in range(5)]

    assert asyncio.run(scenario()) == [1, 2, 3, None, None]


def test_the_filler_waits_until_fewer_than_low_rows_are_left() -> None:
    async def scenario() -> list[str]:
        feed: RowFeed[int] = RowFeed(low=3)
        events: list[str] = []

        async def filler() -> None:
            feed.put_many(range(5))
            await feed.wait_for_room()
            events.append(f"room at {len(feed)}")

        task = asyncio.create_task(filler())
        for _ in range(3):
            await asyncio.sleep(0)
            events.append(f"took {await feed.get()}")
        await task
        return events

    # 5 rows, low 3: taking rows 0, 1 (3 left) keeps the filler waiting; row 2 frees it.
    assert asyncio.run(scenario()) == ["took 0", "took 1", "took 2", "room at 2"]


def test_a_waiting_worker_wakes_for_new_rows_and_clear_frees_the_filler() -> None:
    async def scenario() -> tuple[int | None, bool]:
        feed: RowFeed[int] = RowFeed(low=1)
        worker = asyncio.create_task(feed.get())
        await asyncio.sleep(0)
        assert not worker.done()  # nothing to take yet
        feed.put_many([7])
        got = await worker
        feed.put_many([8, 9])
        filler = asyncio.create_task(feed.wait_for_room())
        await asyncio.sleep(0)
        blocked = not filler.done()
        feed.clear()  # the run stops: queued rows are dropped, the filler goes on
        await asyncio.wait_for(filler, timeout=1)
        return got, blocked and len(feed) == 0

    assert asyncio.run(scenario()) == (7, True)


def test_low_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RowFeed(low=0)
