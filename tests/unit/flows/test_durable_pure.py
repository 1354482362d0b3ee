"""Runs of Pass and Choice states in a durable execution.

These states need no I/O, so ``DurableRunner.run`` takes a short path for
them (no executor, no queue round trip between transitions) and saves them
write-behind (see test_writebehind.py for writes that take a while). On the
memory backend a write lands at the next turn of the event loop, which the
runner gives every few transitions. These tests pin that saves stay strictly in
order with one write in flight at a time, that a stop or a timeout still wins,
and that the outcome equals the in-memory executor's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reflow.backends import Backend
from reflow.flows import run
from reflow.flows.service import FlowService
from reflow.testing import FakeClock


def pass_chain(length: int) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for index in range(length):
        state: dict[str, Any] = {"Type": "Pass", "Result": index, "ResultPath": "$.last"}
        if index + 1 < length:
            state["Next"] = f"S{index + 1}"
        else:
            state["End"] = True
        states[f"S{index}"] = state
    return {"StartAt": "S0", "States": states}


def counter(limit: int, **top: Any) -> dict[str, Any]:
    return {
        "StartAt": "Init",
        **top,
        "States": {
            "Init": {"Type": "Pass", "Result": 0, "ResultPath": "$.i", "Next": "Check"},
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.i", "NumericLessThan": limit, "Next": "Inc"}],
                "Default": "Done",
            },
            "Inc": {
                "Type": "Pass",
                "Parameters": {"i.$": "States.MathAdd($.i, 1)"},
                "Next": "Check",
            },
            "Done": {"Type": "Succeed"},
        },
    }


def writes_of(phases: list[tuple[str, int]]) -> list[list[int]]:
    """The writes the persist hook saw, each as the transitions it covered; fails unless
    each write was announced whole, then reported whole, before the next began (one in
    flight at a time) and every transition was covered once, in order."""
    writes: list[list[int]] = []
    index = 0
    while index < len(phases):
        covered = []
        while index < len(phases) and phases[index][0] == "before":
            covered.append(phases[index][1])
            index += 1
        landed = []
        while index < len(phases) and phases[index][0] == "after":
            landed.append(phases[index][1])
            index += 1
        assert covered and landed == covered, phases
        writes.append(covered)
    flat = [seq for write in writes for seq in write]
    assert flat == list(range(1, len(flat) + 1)), phases
    return writes


async def test_pass_transitions_are_saved_in_order_one_write_in_flight_at_a_time(
    backend: Backend,
) -> None:
    phases: list[tuple[str, int]] = []
    service = FlowService(
        backend,
        {"chain": pass_chain(30)},
        on_persist=lambda phase, name, seq: phases.append((phase, seq)),
    )
    await service.start_execution("chain", {"n": 1}, name="one")
    await service.run_execution("one")
    writes = writes_of(phases)
    # Every transition saved; on memory a write lands at the next turn of the event
    # loop, which comes every few transitions: those in between were merged.
    assert sum(map(len, writes)) == 30 and len(writes) < 30
    described = await service.describe("one")
    expected = run(pass_chain(30), {"n": 1})
    assert (described["status"], described["output"]) == ("SUCCEEDED", expected.output)
    assert described["transitions"] == 30
    events = [event["type"] for event in await service.history("one")]
    assert events == expected.event_types()


async def test_a_choice_loop_runs_durably_to_the_in_memory_output(backend: Backend) -> None:
    service = FlowService(backend, {"loop": counter(40)})
    await service.start_execution("loop", {}, name="loop")
    await service.run_execution("loop")
    expected = run(counter(40), {})
    described = await service.describe("loop")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"i": 40})
    assert [event["type"] for event in await service.history("loop")] == expected.event_types()


async def test_a_stop_during_a_pass_chain_wins_and_nothing_is_written_after_it(
    backend: Backend,
) -> None:
    stopping: list[asyncio.Future[Any]] = []

    def hook(phase: str, name: str, seq: int) -> None:
        if (phase, seq) == ("after", 10):
            stopping.append(asyncio.ensure_future(service.stop_execution(name, error="Halt")))

    service = FlowService(backend, {"chain": pass_chain(200)}, on_persist=hook)
    await service.start_execution("chain", {}, name="halted")
    await service.run_execution("halted")
    await stopping[0]
    described = await service.describe("halted")
    assert (described["status"], described["error"]) == ("ABORTED", "Halt")
    events = [event["type"] for event in await service.history("halted")]
    assert events[-1] == "ExecutionAborted"
    assert events.count("PassStateEntered") < 200
    # The runner gave up on its fenced transition: running again changes nothing.
    await service.run_execution("halted")
    assert [event["type"] for event in await service.history("halted")] == events


async def test_an_execution_timeout_ends_a_choice_loop_between_transitions(
    backend: Backend, clock: FakeClock
) -> None:
    started = clock.time()

    def hook(phase: str, name: str, seq: int) -> None:
        if (phase, seq) == ("after", 50):
            clock.advance(5)  # the loop's TimeoutSeconds (2) has run out

    service = FlowService(backend, {"loop": counter(10_000, TimeoutSeconds=2)}, on_persist=hook)
    await service.start_execution("loop", {}, name="slow")
    await service.run_execution("slow")
    described = await service.describe("slow")
    assert (described["status"], described["error"]) == ("TIMED_OUT", "States.Timeout")
    history = await service.history("slow")
    assert history[-1]["type"] == "ExecutionTimedOut"
    assert history[-1]["timestamp"] == started + 5
    # The transitions made before the clock moved are kept (those computed ahead of
    # the write that reported 50 too); none was made after it.
    assert described["transitions"] > 50
    assert all(event["timestamp"] == started for event in history[:-1])
