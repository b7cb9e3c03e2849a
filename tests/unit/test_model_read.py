"""``chatcore.turns._until``: how a turn reads the model's deltas and how a stop interrupts that read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatcore.llm import LLMDelta, TextDelta
from chatcore.turns import _until

pytestmark = pytest.mark.anyio


async def _deltas(n: int, *, then_hang: bool = False) -> AsyncIterator[LLMDelta]:
    for i in range(n):
        await asyncio.sleep(0)
        yield TextDelta(f"t{i}")
    if then_hang:
        await asyncio.Event().wait()


async def test_reading_makes_no_task_per_delta():
    loop = asyncio.get_running_loop()
    created: list[object] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        texts = [d.text async for d in _until(_deltas(200), asyncio.Event()) if isinstance(d, TextDelta)]
    finally:
        loop.set_task_factory(previous)
    assert len(texts) == 200
    assert len(created) <= 1  # the stop's watcher


async def test_a_stop_during_a_silent_read_ends_it_and_leaves_the_task_uncancelled():
    stop, silent = asyncio.Event(), asyncio.Event()
    got: list[LLMDelta] = []

    async def read() -> str:
        async for delta in _until(_deltas(3, then_hang=True), stop):
            got.append(delta)
            if len(got) == 3:
                silent.set()
        await asyncio.sleep(0)  # the task is usable after the stop: no cancellation left pending
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return "ended"

    reader = asyncio.ensure_future(read())
    await silent.wait()
    await asyncio.sleep(0)  # the reader is in its next (endless) read
    stop.set()
    assert await asyncio.wait_for(reader, timeout=5) == "ended"


async def test_a_stop_between_reads_ends_the_loop_without_cancelling():
    stop = asyncio.Event()
    got: list[LLMDelta] = []
    async for delta in _until(_deltas(10), stop):
        got.append(delta)
        if len(got) == 2:
            stop.set()
            await asyncio.sleep(0)  # the watcher runs while no read is pending
    assert len(got) == 2
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_from_outside_is_not_taken_for_a_stop():
    stop = asyncio.Event()
    started = asyncio.Event()

    async def read() -> None:
        async for _ in _until(_deltas(1, then_hang=True), stop):
            started.set()

    reader = asyncio.ensure_future(read())
    await started.wait()
    await asyncio.sleep(0)
    reader.cancel()
    stop.set()  # a stop at the same moment does not swallow the outer cancellation
    with pytest.raises(asyncio.CancelledError):
        await reader
