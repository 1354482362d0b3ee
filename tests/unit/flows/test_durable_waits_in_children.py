"""A Wait (or a retry's back-off) inside a durable Map iteration, Parallel branch or
Distributed Map child parks instead of holding the worker that drives the state.

The child's record says when its wait ends; once every child of the state has
ended or is waiting, the parent saves itself as waiting for its children with a
due timer at the earliest end, and the worker is free. The timer wakes the
parent; its redone transition finds each child where it stood. A Wait shorter
than ``PARK_AFTER`` is slept in memory (parking would cost more). FakeClock
without autojump: the tests move time themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows import TaskContext
from reflow.flows.iterations import PARK_AFTER
from reflow.flows.service import FlowService
from reflow.testing import FakeClock
from tests.unit.flows.helpers import until


@pytest.fixture
def store(memory_or_sqlite: Backend) -> Backend:
    """Each test on memory and on SQLite (conftest.py)."""
    return memory_or_sqlite


def waiting_map(seconds: Any = 600, **fan: Any) -> dict[str, Any]:
    """A Map whose iteration waits ``seconds`` (a number or a path), then calls ``work``."""
    pause: dict[str, Any] = {"Type": "Wait", "Next": "Work"}
    pause["SecondsPath" if isinstance(seconds, str) else "Seconds"] = seconds
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "StartAt": "Pause",
                    "States": {
                        "Pause": pause,
                        "Work": {"Type": "Task", "Resource": "work", "End": True},
                    },
                },
                "End": True,
                **fan,
            }
        },
    }


QUICK = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "work", "End": True}}}


class Work:
    """Records each call's input and the virtual time it was made at."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[Any, float]] = []

    def __call__(self, event: Any, context: TaskContext) -> Any:
        self.calls.append((event, self.clock.time()))
        return {"done": event}


async def status(service: FlowService, name: str) -> str:
    return str((await service.describe(name))["status"])


async def test_a_map_of_long_waits_frees_the_only_worker_and_a_timer_wakes_it(
    store: Backend, clock: FakeClock
) -> None:
    work = Work(clock)
    service = FlowService(
        store,
        {"waits": waiting_map(600), "quick": QUICK},
        functions={"work": work},
        workers=1,
        poll=1.0,
        block=0.01,
    )
    begun, wall = clock.time(), time.monotonic()
    await service.start()
    try:
        await service.start_execution("waits", {"items": [1, 2, 3, 4, 5]}, name="w")

        async def parked() -> bool:
            return (await service.describe("w")).get("waiting_for") == "children"

        await until(parked, "the Map parks")
        # The one worker is free: another execution runs to its end meanwhile, and no
        # virtual time has passed (before, the worker slept in the children's Waits).
        await service.start_execution("quick", "q", name="q")

        async def quick_done() -> bool:
            return await status(service, "q") == "SUCCEEDED"

        await until(quick_done, "the second execution ends while the first waits")
        assert clock.time() == begun
        assert work.calls == [("q", begun)]
        assert await status(service, "w") == "RUNNING"
        clock.advance(600)

        async def waits_done() -> bool:
            return await status(service, "w") == "SUCCEEDED"

        await until(waits_done, "the timer wakes the Map and it ends")
    finally:
        await service.stop()
    assert time.monotonic() - wall < 10  # ten minutes of Waits, in wall-clock moments
    described = await service.describe("w")
    assert described["output"] == [{"done": i} for i in (1, 2, 3, 4, 5)]
    # Each iteration's task ran once, when its Wait had ended.
    assert sorted(event for event, _ in work.calls[1:]) == [1, 2, 3, 4, 5]
    assert all(at >= begun + 600 for _, at in work.calls[1:])
    types = [event["type"] for event in await service.history("w")]
    assert types.count("WaitStateEntered") == 5 and types.count("WaitStateExited") == 5
    assert types.count("MapStateEntered") == 1 and types[-1] == "ExecutionSucceeded"
    assert await store.kv.scan("flows/c/", limit=10) == []  # the child records are gone


async def test_waits_of_different_lengths_wake_the_parent_at_each_end(
    store: Backend, clock: FakeClock
) -> None:
    work = Work(clock)
    service = FlowService(store, {"f": waiting_map("$.wait")}, functions={"work": work})
    begun = clock.time()
    items = [{"wait": 60}, {"wait": 300}, {"wait": 120}]
    await service.start_execution("f", {"items": items}, name="d")
    await service.drain()
    assert work.calls == []
    for step in range(1, 31):  # noqa: B007 (read after the loop)
        clock.advance(10)
        await service.drain()
        if await status(service, "d") != "RUNNING":
            break
    assert step == 30 and await status(service, "d") == "SUCCEEDED"
    # Each task ran when its own Wait ended (the drain after it), not when the longest did.
    assert sorted((e["wait"], at - begun) for e, at in work.calls) == [
        (60, 60),
        (120, 120),
        (300, 300),
    ]


async def test_a_wait_and_a_running_task_share_the_state_and_the_wait_goes_on_in_place(
    store: Backend, clock: FakeClock
) -> None:
    """A child whose Wait ends while a sibling still runs goes on where it is."""
    gate = asyncio.Event()
    seen: list[tuple[str, float]] = []

    async def slow(event: Any, context: TaskContext) -> Any:
        await gate.wait()
        seen.append(("slow", clock.time()))
        return "slow"

    def fast(event: Any, context: TaskContext) -> Any:
        seen.append(("fast", clock.time()))
        return "fast"

    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "S",
                        "States": {"S": {"Type": "Task", "Resource": "slow", "End": True}},
                    },
                    {
                        "StartAt": "W",
                        "States": {
                            "W": {"Type": "Wait", "Seconds": 30, "Next": "F"},
                            "F": {"Type": "Task", "Resource": "fast", "End": True},
                        },
                    },
                ],
                "End": True,
            }
        },
    }
    service = FlowService(store, {"p": definition}, functions={"slow": slow, "fast": fast})
    begun = clock.time()
    await service.start_execution("p", {}, name="p")
    draining = asyncio.ensure_future(service.drain())
    try:
        for _ in range(200):
            await asyncio.sleep(0.002)
        clock.advance(30)  # the Wait ends while "slow" still runs: no park, no timer
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.002)
        assert seen == [("fast", begun + 30)]
        gate.set()
        await draining
    finally:
        draining.cancel()
    described = await service.describe("p")
    assert described["status"] == "SUCCEEDED" and described["output"] == ["slow", "fast"]


async def test_a_retry_back_off_parks_too_and_the_next_attempt_has_its_own_key(
    store: Backend, clock: FakeClock
) -> None:
    keys: list[tuple[int, str, float]] = []

    def flaky(event: Any, context: TaskContext) -> Any:
        keys.append((context.attempt, context.idempotency_key, clock.time()))
        if context.attempt == 0:
            raise ValueError("not yet")
        return event

    definition = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "StartAt": "T",
                    "States": {
                        "T": {
                            "Type": "Task",
                            "Resource": "flaky",
                            "Retry": [{"ErrorEquals": ["ValueError"], "IntervalSeconds": 120}],
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    service = FlowService(store, {"r": definition}, functions={"flaky": flaky})
    begun = clock.time()
    await service.start_execution("r", {"items": ["a"]}, name="r")
    await service.drain()  # returns: the back-off parked the state
    assert (await service.describe("r")).get("waiting_for") == "children"
    clock.advance(120)
    await service.drain()
    assert await status(service, "r") == "SUCCEEDED"
    assert [(attempt, at - begun) for attempt, _, at in keys] == [(0, 0), (1, 120)]
    assert keys[0][1] != keys[1][1]


async def test_a_short_wait_is_slept_in_memory(store: Backend, clock: FakeClock) -> None:
    work = Work(clock)
    definition = waiting_map(600)
    pause = definition["States"]["Fan"]["ItemProcessor"]["States"]["Pause"]
    del pause["Seconds"]
    assert PARK_AFTER > 0.5
    pause["Timestamp"] = "2023-11-14T22:13:20.500Z"  # the FakeClock's start + 0.5 s
    service = FlowService(store, {"f": definition}, functions={"work": work})
    await service.start_execution("f", {"items": [1, 2]}, name="s")
    draining = asyncio.ensure_future(service.drain())
    try:
        for _ in range(100):
            await asyncio.sleep(0.002)
        # Still in the first drain: the worker holds the short Wait, nothing parked.
        assert not draining.done()
        assert (await service.describe("s")).get("waiting_for") != "children"
        clock.advance(0.5)
        await draining
    finally:
        draining.cancel()
    assert await status(service, "s") == "SUCCEEDED"
    assert [at for _, at in work.calls] == [clock.time()] * 2


async def test_the_execution_timeout_inside_a_parked_wait_times_it_out(
    store: Backend, clock: FakeClock
) -> None:
    definition = waiting_map(3600)
    definition["TimeoutSeconds"] = 100
    service = FlowService(store, {"f": definition}, functions={"work": Work(clock)})
    await service.start_execution("f", {"items": [1]}, name="t")
    await service.drain()
    assert (await service.describe("t")).get("waiting_for") == "children"
    clock.advance(100)
    await service.drain()
    described = await service.describe("t")
    assert described["status"] == "TIMED_OUT", described


async def test_a_distributed_map_child_waiting_parks_too(store: Backend, clock: FakeClock) -> None:
    work = Work(clock)
    definition = waiting_map(600)
    definition["States"]["Fan"]["ItemProcessor"]["ProcessorConfig"] = {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "STANDARD",
    }
    service = FlowService(store, {"f": definition}, functions={"work": work})
    await service.start_execution("f", {"items": [1, 2, 3]}, name="dm")
    await service.drain()
    assert (await service.describe("dm")).get("waiting_for") == "children"
    assert work.calls == []
    clock.advance(600)
    await service.drain()
    described = await service.describe("dm")
    assert described["status"] == "SUCCEEDED", described
    assert described["output"] == [{"done": i} for i in (1, 2, 3)]
