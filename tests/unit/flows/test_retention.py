"""Retention of the flows streams: ``flows.work`` and the hand-off streams stay bounded.

Acknowledging an entry leaves it in the stream; the service trims what is
provably acknowledged (older than the oldest pending entry and no newer than
what it acknowledged itself) once ``keep_acked`` seconds old. Everything runs
in virtual time on a FakeClock without autojump; memory and SQLite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows import TaskContext
from reflow.flows.service import WORK_STREAM, FlowService, handoff_stream
from reflow.testing import FakeClock

Y = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": "y", "End": True}}}
X = {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": "work", "End": True}}}
KEEP, EVERY, RATE = 30.0, 10.0, 5  # seconds kept, seconds between trims, starts a second


def work(event: Any, context: TaskContext) -> Any:
    return {"worked": event}


@pytest.fixture
def shared(memory_or_sqlite: Backend) -> Backend:
    """Each test on memory and on SQLite (conftest.py)."""
    return memory_or_sqlite


def service(backend: Backend, flows: dict[str, Any]) -> FlowService:
    return FlowService(backend, flows, functions={"work": work}, keep_acked=KEEP, trim_every=EVERY)


async def tick(svc: FlowService) -> None:
    """What the timer loop does about retention each poll."""
    if svc.trimmer.due():
        await svc.trim_streams()


async def test_work_stream_stays_bounded(shared: Backend, clock: FakeClock) -> None:
    svc = service(shared, {"y": Y})
    longest = 0
    for second in range(300):
        for index in range(RATE):
            await svc.start_execution("y", name=f"e{second}-{index}")
        await svc.drain()
        await tick(svc)
        longest = max(longest, await shared.log.length(WORK_STREAM))
        clock.advance(1.0)
    # 1500 entries appended; at most KEEP + EVERY (+1 s) seconds' worth ever held.
    assert longest <= RATE * (KEEP + EVERY + 2)
    assert svc.trimmer.trimmed >= 1500 - RATE * (KEEP + EVERY + 2)
    assert (await svc.describe("e299-4"))["status"] == "SUCCEEDED"


async def test_pending_entry_is_never_trimmed(shared: Backend, clock: FakeClock) -> None:
    svc = service(shared, {"y": Y})
    await svc.start_execution("y", name="held")
    # A worker takes the entry and never acknowledges it (a long lease: it is busy).
    taken = await shared.log.read(WORK_STREAM, "flow-workers", "stuck", count=1, lease=1e6)
    assert [entry.data for entry in taken] == [b"held"]
    for second in range(200):
        await svc.start_execution("y", name=f"e{second}")
        await svc.drain()
        await tick(svc)
        clock.advance(1.0)
    ids = [entry.id for entry in await shared.log.range(WORK_STREAM)]
    assert taken[0].id in ids  # 200 s old and well past KEEP, still there
    pending = await shared.log.pending(WORK_STREAM, "flow-workers")
    assert [entry.id for entry in pending] == [taken[0].id]
    # Once acknowledged, it and what follows go at the next trims.
    await shared.log.ack(WORK_STREAM, "flow-workers", [taken[0].id])
    clock.advance(EVERY)
    await tick(svc)
    assert taken[0].id not in [entry.id for entry in await shared.log.range(WORK_STREAM)]
    assert await shared.log.length(WORK_STREAM) <= KEEP + EVERY + 2


async def test_undelivered_entries_are_never_trimmed(shared: Backend, clock: FakeClock) -> None:
    svc = service(shared, {"y": Y})
    for index in range(10):
        await svc.start_execution("y", name=f"done{index}")
        clock.advance(10.0)
    await svc.drain()
    # Queued while no worker reads (another process's workers are all busy, say).
    for index in range(10):
        await svc.start_execution("y", name=f"waiting{index}")
        clock.advance(1.0)
    clock.advance(10 * KEEP)
    await tick(svc)
    left = [entry.data.decode() for entry in await shared.log.range(WORK_STREAM)]
    # The acked ones KEEP (30) s older than the newest acked (done9) went; none queued since.
    assert left == [f"done{index}" for index in range(6, 10)] + [
        f"waiting{index}" for index in range(10)
    ]
    await svc.drain()
    assert (await svc.describe("waiting9"))["status"] == "SUCCEEDED"


async def test_trimming_waits_for_something_acked_here(shared: Backend, clock: FakeClock) -> None:
    # A service that acknowledged nothing cannot tell delivered from undelivered.
    svc = service(shared, {"y": Y})
    for index in range(5):
        await svc.start_execution("y", name=f"e{index}")
    clock.advance(10 * KEEP)
    assert await svc.trim_streams() == 0
    assert await shared.log.length(WORK_STREAM) == 5


async def test_handoff_streams_stay_bounded(shared: Backend, clock: FakeClock) -> None:
    new = service(shared, {"x": X, "y": Y})
    old = service(shared, {"y": Y})
    stream = handoff_stream("x")
    longest = 0
    for second in range(200):
        for index in range(RATE):
            await new.start_execution("x", name=f"x{second}-{index}")
        await old.drain()  # old takes every entry and passes each on
        await new.drain()  # new runs them off its hand-off stream
        await tick(new)
        await tick(old)
        longest = max(longest, await shared.log.length(stream))
        clock.advance(1.0)
    assert old.passed_on["x"] == 200 * RATE
    assert longest <= RATE * (KEEP + EVERY + 2)
    assert await shared.log.length(WORK_STREAM) <= RATE * (KEEP + EVERY + 2)
    assert (await new.describe("x199-4"))["status"] == "SUCCEEDED"


async def test_timer_loop_trims(shared: Backend, clock: FakeClock) -> None:
    svc = FlowService(shared, {"y": Y}, keep_acked=KEEP, trim_every=EVERY, workers=1, poll=1.0)
    for index in range(20):  # one every 5 s: e0 .. e19 over 95 s
        await svc.start_execution("y", name=f"e{index}")
        clock.advance(5.0)
    await svc.drain()
    async with svc:
        clock.advance(KEEP + 1)
        for _ in range(3):
            clock.advance(EVERY + 1)
            for _ in range(10):
                await asyncio.sleep(0.01)
        # Those KEEP (30) s older than e19, the newest acknowledged: e0 .. e12.
        assert svc.trimmer.trimmed == 13
    assert await shared.log.length(WORK_STREAM) == 7
