"""Durable Parallel branches and Map iterations: each child keeps its own progress.

A crash is a ``Crash`` (a BaseException, as a dying process would leave the
work unsaved) raised by a task on a chosen call; a second service on the
same backend (the restarted process) recovers and finishes. Then no task
whose result was saved ran again, the one in flight ran again with the same
idempotency key, and output and history are those of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from reflow.flows.store import ExecutionRecord, execution_arn
from reflow.testing import FakeClock


class Crash(BaseException):
    """Stands in for the process dying in the middle of a task."""


class Tasks:
    """Records (input, idempotency key) of every call; raises Crash on call ``crash_at``."""

    def __init__(self, crash_at: int | None = None, fail: Any = None) -> None:
        self.crash_at = crash_at
        self.fail = fail
        self.calls: list[tuple[Any, str]] = []
        self.at_crash = 0  # how many calls had been made when the crash came

    async def __call__(self, event: Any, context: TaskContext) -> Any:
        self.calls.append((event, context.idempotency_key))
        number = len(self.calls)
        await asyncio.sleep(0)  # a real call suspends: children interleave
        if number == self.crash_at:
            self.crash_at = None
            raise Crash()
        if event == self.fail:
            raise ValueError(f"bad item {event}")
        return {"done": event}

    def keys_by_item(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for event, key in self.calls:
            found.setdefault(repr(event), set()).add(key)
        return found


def map_flow(concurrency: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": concurrency,
                "ItemProcessor": {
                    "StartAt": "Shape",
                    "States": {
                        "Shape": {"Type": "Pass", "Parameters": {"v.$": "$"}, "Next": "Work"},
                        "Work": {"Type": "Task", "Resource": "work", "Next": "After"},
                        "After": {"Type": "Pass", "End": True},
                    },
                },
                **extra,
                "End": True,
            }
        },
    }


async def crash_then_resume(
    backend: Backend, definition: dict[str, Any], data: Any, tasks: Tasks
) -> dict[str, Any]:
    crashing = FlowService(backend, {"f": definition}, functions={"work": tasks})
    await crashing.start_execution("f", data, name="x")
    with pytest.raises(Crash):
        await crashing.drain()
    tasks.at_crash = len(tasks.calls)
    restarted = FlowService(backend, {"f": definition}, functions={"work": tasks})
    assert await restarted.recover() == 1
    await restarted.drain()
    return await restarted.describe("x")


@pytest.mark.parametrize("crash_at", [1, 3, 5])
async def test_a_crash_mid_map_runs_no_finished_iteration_again(
    backend: Backend, crash_at: int
) -> None:
    data = {"items": [10, 11, 12, 13, 14]}
    expected = run(map_flow(), data, functions={"work": Tasks()}, clock=FakeClock())
    tasks = Tasks(crash_at=crash_at)
    described = await crash_then_resume(backend, map_flow(), data, tasks)
    assert (described["status"], described["output"]) == ("SUCCEEDED", expected.output)
    # The one that crashed ran again, with its key, and so did any sibling that had
    # started meanwhile (the Crash reaches the state a moment after the task raised
    # it); the iterations saved before it did not.
    assert 6 <= len(tasks.calls) <= 5 + tasks.at_crash - (crash_at - 1)
    keys = tasks.keys_by_item()
    assert all(len(found) == 1 for found in keys.values()), keys
    assert len({key for found in keys.values() for key in found}) == 5
    service = FlowService(backend, {"f": map_flow()})
    types = [event["type"] for event in await service.history("x")]
    assert types == expected.event_types()
    # The children's records went with the transition that left the Map state.
    assert await backend.kv.scan("flows/c/") == []


async def test_each_iteration_and_branch_task_has_a_key_of_its_own(backend: Backend) -> None:
    definition = {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    map_flow(concurrency=0),
                    {
                        "StartAt": "W",
                        "States": {"W": {"Type": "Task", "Resource": "work", "End": True}},
                    },
                ],
                "End": True,
            }
        },
    }
    tasks = Tasks()
    service = FlowService(backend, {"f": definition}, functions={"work": tasks})
    await service.start_execution("f", {"items": [1, 2, 3]}, name="k")
    await service.drain()
    described = await service.describe("k")
    expected = run(definition, {"items": [1, 2, 3]}, functions={"work": Tasks()}, clock=FakeClock())
    assert described["output"] == expected.output
    keys = [key for _, key in tasks.calls]
    assert len(keys) == 4 and len(set(keys)) == 4
    # The nested Map's iterations are told apart under the branch that holds them.
    assert sorted(key.split("/Both@")[1].split("/")[1] for key in keys) == ["0", "0", "0", "1"]


async def test_a_failing_iteration_fails_the_map_and_stops_the_others(backend: Backend) -> None:
    tasks = Tasks(fail={"v": 2})
    definition = map_flow(concurrency=0)
    service = FlowService(backend, {"f": definition}, functions={"work": tasks})
    await service.start_execution("f", {"items": [1, 2, 3, 4]}, name="bad")
    await service.drain()
    described = await service.describe("bad")
    assert (described["status"], described["error"]) == ("FAILED", "ValueError")
    types = [event["type"] for event in await service.history("bad")]
    assert types.count("MapIterationFailed") == 1 and "MapStateFailed" in types
    assert await backend.kv.scan("flows/c/") == []


async def test_tolerated_failures_give_the_same_result_as_in_memory(backend: Backend) -> None:
    definition = map_flow(concurrency=2, ToleratedFailureCount=1)
    data = {"items": [1, 2, 3]}
    expected = run(definition, data, functions={"work": Tasks(fail={"v": 2})}, clock=FakeClock())
    service = FlowService(backend, {"f": definition}, functions={"work": Tasks(fail={"v": 2})})
    await service.start_execution("f", data, name="tol")
    await service.drain()
    described = await service.describe("tol")
    assert (described["status"], described["output"]) == ("SUCCEEDED", expected.output)


def distributed_flow() -> dict[str, Any]:
    definition = map_flow()
    processor = definition["States"]["Fan"]["ItemProcessor"]
    processor["ProcessorConfig"] = {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    return definition


async def test_a_crash_mid_distributed_map_resumes_the_same_map_run(backend: Backend) -> None:
    data = {"items": [1, 2, 3, 4]}
    expected = run(distributed_flow(), data, functions={"work": Tasks()}, clock=FakeClock())
    tasks = Tasks(crash_at=3)
    described = await crash_then_resume(backend, distributed_flow(), data, tasks)
    assert (described["status"], described["output"]) == ("SUCCEEDED", expected.output)
    assert 5 <= len(tasks.calls) <= 4 + tasks.at_crash - 2  # children 0 and 1 were saved
    keys = tasks.keys_by_item()
    assert all(len(found) == 1 for found in keys.values()), keys
    # Child executions of one Map Run: ...:execution:f/Fan:RUN_ID:INDEX, one run id.
    run_ids = {key.split(":execution:f/Fan:")[1].rsplit(":", 1)[0] for _, key in tasks.calls}
    assert len(run_ids) == 1


async def test_two_workers_on_one_map_finish_it_once_with_one_key_per_item(
    backend: Backend,
) -> None:
    tasks = Tasks()
    definition = map_flow(concurrency=0)
    first = FlowService(backend, {"f": definition}, functions={"work": tasks})
    second = FlowService(backend, {"f": definition}, functions={"work": tasks})
    await first.start_execution("f", {"items": list(range(8))}, name="both")
    # Two processes advance it at once (a redelivered entry): each saves children the
    # other has moved on, adopts the stored record and goes on; one parent save wins.
    await asyncio.gather(first.run_execution("both"), second.run_execution("both"))
    await first.drain()
    described = await first.describe("both")
    assert described["status"] == "SUCCEEDED"
    assert [row["done"]["v"] for row in described["output"]] == list(range(8))
    keys = tasks.keys_by_item()
    assert len(keys) == 8 and all(len(found) == 1 for found in keys.values()), keys
    types = [event["type"] for event in await first.history("both")]
    assert types.count("ExecutionSucceeded") == 1 and types.count("MapIterationSucceeded") == 8


def parallel_of_map() -> dict[str, Any]:
    return {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    map_flow(concurrency=2),
                    {
                        "StartAt": "W",
                        "States": {"W": {"Type": "Task", "Resource": "work", "End": True}},
                    },
                ],
                "End": True,
            }
        },
    }


async def test_a_crash_inside_a_nested_map_resumes_it_where_it_stood(backend: Backend) -> None:
    data = {"items": [1, 2, 3, 4, 5]}
    expected = run(parallel_of_map(), data, functions={"work": Tasks()}, clock=FakeClock())
    tasks = Tasks(crash_at=4)
    described = await crash_then_resume(backend, parallel_of_map(), data, tasks)
    assert (described["status"], described["output"]) == ("SUCCEEDED", expected.output)
    keys = tasks.keys_by_item()
    assert len(keys) == 6 and all(len(found) == 1 for found in keys.values()), keys
    # Saved iterations and the saved branch ran once; only calls in flight ran again.
    counts = [sum(1 for event, _ in tasks.calls if event == item) for item, _ in tasks.calls]
    assert max(counts) <= 2 and len(tasks.calls) <= 6 + tasks.at_crash - 1


class Hangs:
    """A task that waits until cancelled; ``started`` counts calls, ``ended`` returns."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    async def __call__(self, event: Any, context: TaskContext) -> Any:
        self.started += 1
        await asyncio.Event().wait()
        self.ended += 1


async def test_the_first_failing_branch_fails_parallel_and_the_others_are_stopped(
    backend: Backend,
) -> None:
    def branch(resource: str) -> dict[str, Any]:
        return {
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "Resource": resource, "End": True}},
        }

    definition = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Parallel", "Branches": [branch("hang"), branch("boom")], "End": True}
        },
    }
    hangs = Hangs()

    def boom(event: Any, context: TaskContext) -> Any:
        raise KeyError("boom")

    service = FlowService(backend, {"f": definition}, functions={"hang": hangs, "boom": boom})
    await service.start_execution("f", {}, name="p")
    await service.drain()
    described = await service.describe("p")
    assert (described["status"], described["error"]) == ("FAILED", "KeyError")
    assert (hangs.started, hangs.ended) == (1, 0)
    types = [event["type"] for event in await service.history("p")]
    assert types[-2:] == ["ParallelStateFailed", "ExecutionFailed"]


async def test_a_retried_map_runs_every_iteration_again_under_new_keys(
    backend: Backend, clock: FakeClock
) -> None:
    definition = map_flow(concurrency=1)
    definition["States"]["Fan"]["Retry"] = [
        {"ErrorEquals": ["ValueError"], "IntervalSeconds": 1, "MaxAttempts": 1}
    ]
    calls: list[tuple[Any, str]] = []

    def flaky(event: Any, context: TaskContext) -> Any:
        calls.append((event["v"], context.idempotency_key))
        if event["v"] == 2 and len(calls) <= 2:
            raise ValueError("once")
        return event["v"]

    service = FlowService(backend, {"f": definition}, functions={"work": flaky})
    await service.start_execution("f", {"items": [1, 2]}, name="r")
    await service.drain()
    assert await backend.kv.scan("flows/c/") == []  # the failed attempt's records went
    clock.advance(1)  # the retry's back-off is a durable timer
    await service.drain()
    assert (await service.describe("r"))["output"] == [1, 2]
    assert [value for value, _ in calls] == [1, 2, 1, 2]
    assert len({key for _, key in calls}) == 4


async def test_a_map_whose_iterations_only_reshape_data_reads_and_writes_no_child_record(
    backend: Backend,
) -> None:
    touched: list[str] = []
    kv: Any = backend.kv
    scan, put, transact = kv.scan, kv.put, kv.transact

    async def spy_scan(prefix: str = "", **options: Any) -> Any:
        touched.append(prefix)
        return await scan(prefix, **options)

    async def spy_put(key: str, value: bytes, **options: Any) -> Any:
        touched.append(key)
        return await put(key, value, **options)

    async def spy_transact(operations: Any) -> Any:
        touched.extend(operation.key for operation in operations)
        return await transact(operations)

    kv.scan, kv.put, kv.transact = spy_scan, spy_put, spy_transact
    definition = map_flow()
    processor = definition["States"]["Fan"]["ItemProcessor"]["States"]
    processor["Shape"]["Next"] = "After"
    del processor["Work"]
    service = FlowService(backend, {"f": definition})
    await service.start_execution("f", {"items": [1, 2, 3]}, name="pure")
    await service.drain()
    assert (await service.describe("pure"))["output"] == [{"v": 1}, {"v": 2}, {"v": 3}]
    assert not [key for key in touched if key.startswith("flows/c/")]


def test_a_record_saved_before_the_parent_field_reads_back_without_a_parent() -> None:
    record = ExecutionRecord(
        name="old", flow="f", id=execution_arn("f", "old"), input={}, state="A", state_input={}
    )
    stored = json.loads(record.to_json())
    stored[6] = stored[6][:-1]  # the changing fields as they were before "parent"
    back = ExecutionRecord.from_json(json.dumps(stored).encode())
    assert (back.name, back.state, back.parent) == ("old", "A", None)


async def test_a_backend_failure_while_saving_children_fails_the_transition_not_the_run(
    backend: Backend,
) -> None:
    kv: Any = backend.kv
    transact = kv.transact
    broken = {"left": 1}

    async def flaky_transact(operations: Any) -> Any:
        if broken["left"] and any(op.key.startswith("flows/c/") for op in operations):
            broken["left"] -= 1
            raise ConnectionError("the backend went away")
        return await transact(operations)

    kv.transact = flaky_transact
    tasks = Tasks()
    service = FlowService(backend, {"f": map_flow(concurrency=0)}, functions={"work": tasks})
    await service.start_execution("f", {"items": [1, 2, 3]}, name="b")
    # Every save of the batch learns the error; the transition is dropped, unsaved.
    with pytest.raises(ConnectionError):
        await service.drain()
    restarted = FlowService(backend, {"f": map_flow(concurrency=0)}, functions={"work": tasks})
    await restarted.recover()
    await restarted.drain()
    described = await restarted.describe("b")
    assert [row["done"]["v"] for row in described["output"]] == [1, 2, 3]
    assert all(len(found) == 1 for found in tasks.keys_by_item().values())


async def run_until(service: FlowService, clock: FakeClock, step: float, done: Any) -> None:
    """Drain ``service`` over and over in the background, moving the clock ``step`` at
    a time until ``done()`` holds (a child's Wait or back-off parks the state; each
    drain fires the parent's timers that came due). The drain under way when
    ``done()`` holds is let finish; an exception raised in it surfaces here."""
    stopping = asyncio.Event()

    async def keep_draining() -> None:
        while not stopping.is_set():
            await service.drain()
            await asyncio.sleep(0)

    draining = asyncio.ensure_future(keep_draining())
    try:
        for _ in range(200):
            for _ in range(20):
                await asyncio.sleep(0)
            if done() or draining.done():
                break
            clock.advance(step)
    finally:
        stopping.set()
    await draining  # a Crash raised in it surfaces here


def waiting_map() -> dict[str, Any]:
    definition = map_flow(concurrency=0)
    states = definition["States"]["Fan"]["ItemProcessor"]["States"]
    states["Shape"]["Next"] = "Pause"
    states["Pause"] = {"Type": "Wait", "Seconds": 60, "Next": "Work"}
    return definition


async def test_a_crash_during_a_wait_in_an_iteration_waits_only_what_is_left(
    backend: Backend, clock: FakeClock
) -> None:
    tasks = Tasks()
    started = clock.time()
    first = FlowService(backend, {"f": waiting_map()}, functions={"work": tasks})
    await first.start_execution("f", {"items": [1, 2]}, name="w")
    # Half the Wait goes by (the state parked meanwhile), then the process goes away.
    await run_until(first, clock, 30, lambda: clock.time() >= started + 30)
    assert tasks.calls == []
    restarted = FlowService(backend, {"f": waiting_map()}, functions={"work": tasks})
    await restarted.recover()
    await run_until(restarted, clock, 10, lambda: len(tasks.calls) == 2)
    # The saved Wait ends at started + 60: the restart waited the 30 s that were left.
    assert clock.time() - started == 60
    await restarted.drain()
    described = await restarted.describe("w")
    assert [row["done"]["v"] for row in described["output"]] == [1, 2]
    types = [event["type"] for event in await restarted.history("w")]
    assert types.count("WaitStateEntered") == 2 and types.count("WaitStateExited") == 2


async def test_a_crash_during_a_retried_task_resumes_at_that_attempt(
    backend: Backend, clock: FakeClock
) -> None:
    definition = map_flow(concurrency=1)
    work = definition["States"]["Fan"]["ItemProcessor"]["States"]["Work"]
    work["Retry"] = [{"ErrorEquals": ["ValueError"], "IntervalSeconds": 5, "MaxAttempts": 2}]
    attempts: list[tuple[int, str]] = []

    def flaky(event: Any, context: TaskContext) -> Any:
        attempts.append((context.attempt, context.idempotency_key))
        if len(attempts) == 1:
            raise ValueError("first attempt")
        if len(attempts) == 2:
            raise Crash()
        return event["v"]

    first = FlowService(backend, {"f": definition}, functions={"work": flaky})
    await first.start_execution("f", {"items": [7]}, name="t")
    with pytest.raises(Crash):
        await run_until(first, clock, 5, lambda: False)
    restarted = FlowService(backend, {"f": definition}, functions={"work": flaky})
    await restarted.recover()
    await restarted.drain()
    assert (await restarted.describe("t"))["output"] == [7]
    # Attempt 1 was in flight at the crash: it runs again, with its key; attempt 0 does not.
    assert [attempt for attempt, _ in attempts] == [0, 1, 1]
    assert attempts[1][1] == attempts[2][1] != attempts[0][1]
    types = [event["type"] for event in await restarted.history("t")]
    assert types.count("TaskStateEntered") == 1 and types.count("TaskFailed") == 1
