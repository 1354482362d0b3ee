"""HeartbeatSeconds on every Task (not only callbacks), in memory and durable, on a FakeClock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from reflow.backends import memory_backend
from reflow.flows import TaskContext, run, run_async
from reflow.flows.service import FlowService
from reflow.testing import FakeClock


def task_flow(heartbeat: Any = 10, **extra: Any) -> dict[str, Any]:
    task = {"Type": "Task", "Resource": "work", "HeartbeatSeconds": heartbeat, "End": True}
    task.update(extra)
    return {"StartAt": "Work", "States": {"Work": task}}


async def drive(clock: FakeClock, work: Coroutine[Any, Any, Any], step: float = 1.0) -> Any:
    """Run ``work`` while moving the clock forward ``step`` seconds at a time."""
    task = asyncio.ensure_future(work)
    while not task.done():
        for _ in range(5):
            await asyncio.sleep(0)
        if not task.done():
            clock.advance(step)
    return task.result()


def sleeper(total: float, every: float | None, clock: FakeClock) -> Any:
    """An async task that runs ``total`` seconds, heart-beating each ``every`` seconds."""

    async def work(event: Any, context: TaskContext) -> Any:
        done = 0.0
        while done < total:
            pause = every if every is not None else total
            await clock.sleep(pause)
            done += pause
            context.heartbeat()
        return {"ran": done}

    return work


async def test_an_async_task_silent_past_heartbeat_seconds_fails_with_heartbeat_timeout() -> None:
    clock = FakeClock()
    started = clock.time()
    execution = await drive(
        clock,
        run_async(task_flow(10), {}, functions={"work": sleeper(30, None, clock)}, clock=clock),
    )
    assert execution.status == "FAILED"
    assert execution.error == "States.HeartbeatTimeout"
    assert "TaskTimedOut" in execution.event_types()
    # It failed when the heartbeat ran out, not when the task would have ended.
    assert execution.stop_time - started < 15


async def test_a_task_that_heartbeats_within_the_interval_runs_past_it_and_succeeds() -> None:
    clock = FakeClock()
    execution = await drive(
        clock, run_async(task_flow(10), {}, functions={"work": sleeper(30, 5, clock)}, clock=clock)
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output == {"ran": 30}


async def test_heartbeats_too_far_apart_fail_even_after_some_arrived() -> None:
    clock = FakeClock()
    execution = await drive(
        clock, run_async(task_flow(10), {}, functions={"work": sleeper(40, 12, clock)}, clock=clock)
    )
    assert execution.error == "States.HeartbeatTimeout"


async def test_heartbeat_timeout_is_retried_and_caught_like_any_task_error() -> None:
    clock = FakeClock()
    flow = task_flow(
        5,
        Retry=[{"ErrorEquals": ["States.HeartbeatTimeout"], "MaxAttempts": 1}],
        Catch=[{"ErrorEquals": ["States.HeartbeatTimeout"], "Next": "Late"}],
    )
    del flow["States"]["Work"]["End"]
    flow["States"]["Work"]["Next"] = "Done"
    flow["States"]["Late"] = {"Type": "Pass", "Result": "late", "End": True}
    flow["States"]["Done"] = {"Type": "Succeed"}
    calls: list[int] = []

    async def work(event: Any, context: TaskContext) -> Any:
        calls.append(context.attempt)
        await clock.sleep(60)
        return "never"

    execution = await drive(clock, run_async(flow, {}, functions={"work": work}, clock=clock))
    assert execution.output == "late"
    assert calls == [0, 1]


def test_a_sync_task_that_lets_the_clock_pass_the_interval_without_a_beat_fails() -> None:
    clock = FakeClock()

    def slow(event: Any, context: TaskContext) -> Any:
        clock.advance(20)
        return "done"

    def beating(event: Any, context: TaskContext) -> Any:
        for _ in range(4):
            clock.advance(5)
            context.heartbeat()
        return "done"

    failed = run(task_flow(10), {}, functions={"work": slow}, clock=clock)
    assert failed.error == "States.HeartbeatTimeout"
    ok = run(task_flow(10), {}, functions={"work": beating}, clock=clock)
    assert ok.output == "done"


def test_heartbeat_seconds_path_reads_the_interval_from_the_input() -> None:
    clock = FakeClock()

    def slow(event: Any, context: TaskContext) -> Any:
        clock.advance(20)
        return "done"

    flow = task_flow()
    del flow["States"]["Work"]["HeartbeatSeconds"]
    flow["States"]["Work"]["HeartbeatSecondsPath"] = "$.beat"
    assert run(flow, {"beat": 30}, functions={"work": slow}, clock=clock).output == "done"
    failed = run(flow, {"beat": 5}, functions={"work": slow}, clock=clock)
    assert failed.error == "States.HeartbeatTimeout"


def test_a_task_without_heartbeat_seconds_may_stay_silent() -> None:
    clock = FakeClock()

    def slow(event: Any, context: TaskContext) -> Any:
        clock.advance(10_000)
        context.heartbeat()  # harmless without HeartbeatSeconds
        return "done"

    flow = {"StartAt": "W", "States": {"W": {"Type": "Task", "Resource": "work", "End": True}}}
    assert run(flow, {}, functions={"work": slow}, clock=clock).output == "done"


async def test_durable_executions_enforce_heartbeat_seconds_on_plain_tasks() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        service = FlowService(
            backend,
            {"silent": task_flow(10), "beating": task_flow(10)},
            functions={"work": sleeper(30, None, clock)},
        )
        await service.start_execution("silent", {}, name="s")
        await drive(clock, service.drain())
        described = await service.describe("s")
        assert described["status"] == "FAILED"
        assert described["error"] == "States.HeartbeatTimeout"
        service.set_functions({"work": sleeper(30, 5, clock)})
        await service.start_execution("beating", {}, name="b")
        await drive(clock, service.drain())
        assert (await service.describe("b"))["status"] == "SUCCEEDED"
    finally:
        await backend.close()
