"""Admission: priority order, the bounded queue and concurrency, seen from the server side."""

from __future__ import annotations

import asyncio

import pytest

from llvm_batch import AsyncLLVMClient, Limits, Priority, QueueFullError
from llvm_batch.scheduler import Scheduler
from llvm_batch.server import Faults

MODEL = "m1"
HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW


class Gate:
    """A handler that holds the request whose input is ``"hold"`` until :meth:`open`.

    Inputs listed in ``fail_once`` get one 503 before they are answered normally.
    """

    def __init__(self, reply, fail_once: tuple[str, ...] = ()) -> None:
        self.reply = reply
        self.fail_once = set(fail_once)
        self.holding = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, seen, request):
        if seen.inputs == "hold":
            self.holding.set()
            await self.released.wait()
        if seen.inputs in self.fail_once:
            self.fail_once.discard(seen.inputs)
            return self.reply(503, "try again")
        return None

    def open(self) -> None:
        self.released.set()


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def hold_the_only_slot(client: AsyncLLVMClient, gate: Gate) -> asyncio.Task:
    task = asyncio.create_task(client.run_inference(MODEL, "hold"))
    await asyncio.wait_for(gate.holding.wait(), 5)
    return task


def test_under_saturation_high_runs_before_normal_before_low_fifo_within_a_level(
    scripted, reply, fake_time
) -> None:
    submitted = [
        ("low-1", LOW),
        ("normal-1", NORMAL),
        ("high-1", HIGH),
        ("normal-2", "normal"),
        ("low-2", "low"),
        ("high-2", "HIGH"),
        ("normal-3", NORMAL),
    ]

    async def main():
        gate = Gate(reply)
        async with scripted(gate) as app:
            async with AsyncLLVMClient(
                app.url, max_concurrent_requests=1, **fake_time.client_kwargs()
            ) as client:
                first = await hold_the_only_slot(client, gate)
                tasks = []
                for text, level in submitted:
                    tasks.append(
                        asyncio.create_task(client.run_inference(MODEL, text, priority=level))
                    )
                    await wait_until(lambda: client.queue_depth == len(tasks))
                assert client.active_requests == 1
                gate.open()
                await asyncio.gather(first, *tasks)
                return app

    app = asyncio.run(main())
    assert app.inputs == [
        "hold",
        "high-1",
        "high-2",
        "normal-1",
        "normal-2",
        "normal-3",
        "low-1",
        "low-2",
    ]


def test_a_retried_request_keeps_its_priority(scripted, reply, fake_time) -> None:
    """high-1 fails once; its retry still runs before the NORMAL and LOW work queued earlier."""

    async def main():
        gate = Gate(reply, fail_once=("high-1", "low-1"))
        async with scripted(gate) as app:
            async with AsyncLLVMClient(
                app.url, max_concurrent_requests=1, retry_jitter=False, **fake_time.client_kwargs()
            ) as client:
                first = await hold_the_only_slot(client, gate)
                tasks = []
                for text, level in [
                    ("low-1", LOW),
                    ("normal-1", NORMAL),
                    ("high-1", HIGH),
                    ("normal-2", NORMAL),
                    ("low-2", LOW),
                ]:
                    tasks.append(
                        asyncio.create_task(client.run_inference(MODEL, text, priority=level))
                    )
                    await wait_until(lambda: client.queue_depth == len(tasks))
                gate.open()
                await asyncio.gather(first, *tasks)
                return app

    app = asyncio.run(main())
    # A retry waits out its backoff without a slot, so the next waiter goes meanwhile.
    assert app.inputs == [
        "hold",
        "high-1",  # 503
        "normal-1",
        "high-1",  # retried at HIGH: ahead of normal-2, queued long before
        "normal-2",
        "low-1",  # 503
        "low-2",
        "low-1",  # retried at LOW: behind nothing else left
    ]
    assert fake_time.sleeps == [1.0, 1.0]


def test_a_full_queue_refuses_at_once_and_sends_nothing(scripted, reply, fake_time) -> None:
    async def main():
        gate = Gate(reply)
        async with scripted(gate) as app:
            async with AsyncLLVMClient(
                app.url, max_concurrent_requests=1, queue_size=2, **fake_time.client_kwargs()
            ) as client:
                first = await hold_the_only_slot(client, gate)
                queued = [
                    asyncio.create_task(client.run_inference(MODEL, f"queued-{i}")) for i in (1, 2)
                ]
                await wait_until(lambda: client.queue_depth == 2)

                with pytest.raises(QueueFullError) as info:
                    await asyncio.wait_for(client.run_inference(MODEL, "fourth"), 1.0)
                assert app.inputs == ["hold"]
                assert client.queue_depth == 2

                gate.open()
                await asyncio.gather(first, *queued)
                # Once the queue drains, new work is accepted again.
                await client.run_inference(MODEL, "later")
                return app, info.value

    app, error = asyncio.run(main())
    assert app.inputs == ["hold", "queued-1", "queued-2", "later"]
    assert "queue is full" in str(error)
    assert "queue_size" in str(error)
    assert error.error_type == "queue_full"


def test_concurrency_limit_is_reached_and_never_exceeded(make_server) -> None:
    server = make_server(faults=Faults(latency=0.02))

    async def main():
        async with AsyncLLVMClient(server.url, max_concurrent_requests=5) as client:
            answers = await asyncio.gather(
                *(client.run_inference("llvm-model-1", f"q{i}") for i in range(50))
            )
            return answers, client.stats()

    answers, stats = asyncio.run(main())
    assert len(answers) == 50
    assert server.stats.inference_requests == 50
    assert server.stats.max_in_flight == 5
    assert stats.max_active_seen == 5
    assert (stats.active_requests, stats.queue_depth, stats.request_count) == (0, 0, 50)


def test_a_request_in_backoff_holds_no_slot(scripted, reply) -> None:
    async def main():
        in_backoff = asyncio.Event()
        resume = asyncio.Event()
        delays = []

        async def sleep(delay: float) -> None:
            delays.append(delay)
            in_backoff.set()
            await resume.wait()

        gate = Gate(reply, fail_once=("A",))
        async with scripted(gate) as app:
            async with AsyncLLVMClient(
                app.url, max_concurrent_requests=1, retry_jitter=False, sleep=sleep
            ) as client:
                a = asyncio.create_task(client.run_inference(MODEL, "A"))
                await asyncio.wait_for(in_backoff.wait(), 5)
                assert client.active_requests == 0
                b = await asyncio.wait_for(client.run_inference(MODEL, "B"), 5)
                assert not a.done()
                resume.set()
                return app, await a, b, delays

    app, a, b, delays = asyncio.run(main())
    assert app.inputs == ["A", "B", "A"]
    assert a["outputs"].endswith("echo: A") and b["outputs"].endswith("echo: B")
    assert delays == [1.0]


def test_a_cancelled_request_gives_its_slot_back(scripted, reply) -> None:
    async def main():
        gate = Gate(reply)
        async with scripted(gate) as app:
            async with AsyncLLVMClient(app.url, max_concurrent_requests=1) as client:
                try:
                    stuck = await hold_the_only_slot(client, gate)
                    stuck.cancel()
                    await asyncio.gather(stuck, return_exceptions=True)
                    assert client.active_requests == 0
                    answer = await asyncio.wait_for(client.run_inference(MODEL, "next"), 5)
                finally:
                    gate.open()  # the held handler must end before the server stops
                return app, answer, client.breaker_state

    app, answer, breaker_state = asyncio.run(main())
    assert answer["outputs"].endswith("echo: next")
    assert app.inputs == ["hold", "next"]
    assert breaker_state == "closed"


def test_an_unknown_priority_is_refused_before_sending(scripted) -> None:
    async def main():
        async with scripted() as app, AsyncLLVMClient(app.url) as client:
            with pytest.raises(ValueError, match="priority must be one of"):
                await client.run_inference(MODEL, "x", priority="urgent")
            return app

    assert asyncio.run(main()).seen == []


# -- the scheduler alone -------------------------------------------------------------------


def test_a_cancelled_waiter_leaves_its_place_and_no_slot_leaks() -> None:
    async def main():
        scheduler = Scheduler(Limits(ceiling=1, adaptive=False, queue_size=5))
        order = []

        async def job(name: str, level: Priority) -> None:
            async with scheduler.slot(level):
                order.append(name)
                await asyncio.sleep(0)

        release = asyncio.Event()

        async def holder() -> None:
            async with scheduler.slot(NORMAL):
                await release.wait()

        hold = asyncio.create_task(holder())
        await wait_until(lambda: scheduler.active == 1)
        doomed = asyncio.create_task(job("doomed", HIGH))
        kept = asyncio.create_task(job("kept", LOW))
        await wait_until(lambda: scheduler.queue_depth == 2)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        assert scheduler.queue_depth == 1
        release.set()
        await asyncio.gather(hold, kept)
        assert (scheduler.active, scheduler.queue_depth) == (0, 0)
        async with scheduler.slot(NORMAL):  # the slot came back
            assert scheduler.active == 1
        return order

    assert asyncio.run(main()) == ["kept"]


def test_a_retry_is_not_refused_by_a_full_queue() -> None:
    async def main():
        scheduler = Scheduler(Limits(ceiling=1, adaptive=False, queue_size=1))
        release = asyncio.Event()

        async def holder() -> None:
            async with scheduler.slot(NORMAL):
                await release.wait()

        async def job(admitted: bool) -> None:
            async with scheduler.slot(NORMAL, admitted=admitted):
                pass

        hold = asyncio.create_task(holder())
        await wait_until(lambda: scheduler.active == 1)
        waiting = asyncio.create_task(job(False))
        await wait_until(lambda: scheduler.queue_depth == 1)
        with pytest.raises(QueueFullError):
            await job(False)
        retry = asyncio.create_task(job(True))
        await wait_until(lambda: scheduler.queue_depth == 2)
        release.set()
        await asyncio.gather(hold, waiting, retry)

    asyncio.run(main())


def test_max_rps_spaces_attempts_on_the_injected_clock(fake_time) -> None:
    async def main():
        scheduler = Scheduler(
            Limits(ceiling=5, adaptive=False, queue_size=5, max_rps=4),
            clock=fake_time.clock,
            sleep=fake_time.sleep,
        )
        sent_at = []
        for _ in range(4):
            async with scheduler.slot(NORMAL):
                sent_at.append(fake_time.now)
        return sent_at

    assert asyncio.run(main()) == [0.0, 0.25, 0.5, 0.75]
    assert fake_time.sleeps == [0.25, 0.25, 0.25]


def test_pause_until_holds_new_attempts(fake_time) -> None:
    async def main():
        scheduler = Scheduler(
            Limits(ceiling=2, adaptive=False, queue_size=2),
            clock=fake_time.clock,
            sleep=fake_time.sleep,
        )
        scheduler.pause_until(12.5)
        assert scheduler.paused_for() == 12.5
        async with scheduler.slot(HIGH):
            return fake_time.now

    assert asyncio.run(main()) == 12.5
    assert fake_time.sleeps == [12.5]
