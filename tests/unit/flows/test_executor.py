"""The in-memory executor: tasks, time on the injected clock, history, run() in and out of loops."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from reflow.flows import TaskContext, run, run_async
from reflow.testing import FakeClock


def chain(**states: Any) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


class Flaky:
    """Fails ``failures`` times with ConnectionError, then returns its input."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[TaskContext] = []

    def __call__(self, event: Any, context: TaskContext) -> Any:
        self.calls.append(context)
        if len(self.calls) <= self.failures:
            raise ConnectionError(f"attempt {len(self.calls)} failed")
        return {"ok": event}


def test_ten_minute_wait_and_three_retries_take_milliseconds_on_a_fake_clock() -> None:
    clock = FakeClock(autojump=True)
    flaky = Flaky(3)
    definition = chain(
        Pause={"Type": "Wait", "Seconds": 600, "Next": "Call"},
        Call={
            "Type": "Task",
            "Resource": "flaky",
            "Retry": [
                {
                    "ErrorEquals": ["ConnectionError"],
                    "IntervalSeconds": 10,
                    "MaxAttempts": 3,
                    "BackoffRate": 2,
                }
            ],
            "End": True,
        },
    )
    started_virtual, started_real = clock.time(), time.perf_counter()
    execution = run(definition, {"n": 1}, functions={"flaky": flaky}, clock=clock)
    assert time.perf_counter() - started_real < 1.0
    assert execution.status == "SUCCEEDED"
    assert execution.output == {"ok": {"n": 1}}
    assert clock.time() - started_virtual == pytest.approx(600 + 10 + 20 + 40)
    assert [c.attempt for c in flaky.calls] == [0, 1, 2, 3]
    assert len({c.idempotency_key for c in flaky.calls}) == 4


def test_retries_exhausted_fail_with_the_exception_class_and_message() -> None:
    clock = FakeClock(autojump=True)
    definition = chain(
        Call={
            "Type": "Task",
            "Resource": "reflow:function:flaky",
            "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}],
            "End": True,
        }
    )
    execution = run(definition, {}, functions={"flaky": Flaky(5)}, clock=clock)
    assert execution.status == "FAILED"
    assert (execution.error, execution.cause) == ("ConnectionError", "attempt 3 failed")


def test_lambda_arns_resolve_to_function_names() -> None:
    definition = chain(
        T={
            "Type": "Task",
            "Resource": "arn:aws:lambda:eu-west-1:123456789012:function:double",
            "End": True,
        }
    )
    execution = run(definition, 21, functions={"double": lambda n, c: n * 2})
    assert execution.output == 42


def test_lambda_invoke_integration_wraps_the_payload() -> None:
    definition = chain(
        T={
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "double", "Payload.$": "$.n"},
            "ResultSelector": {"value.$": "$.Payload"},
            "End": True,
        }
    )
    execution = run(definition, {"n": 4}, functions={"double": lambda n, c: n * 2})
    assert execution.output == {"value": 8}


def test_unknown_resource_fails_the_task() -> None:
    execution = run(chain(T={"Type": "Task", "Resource": "ghost", "End": True}), {})
    assert execution.status == "FAILED" and execution.error == "States.TaskFailed"


async def test_async_task_past_its_timeout_fails_with_states_timeout() -> None:
    clock = FakeClock()

    async def slow(event: Any, context: TaskContext) -> Any:
        await asyncio.Event().wait()

    definition = chain(T={"Type": "Task", "Resource": "slow", "TimeoutSeconds": 5, "End": True})
    pending = asyncio.ensure_future(
        run_async(definition, {}, functions={"slow": slow}, clock=clock)
    )
    while clock.sleepers == 0:
        await asyncio.sleep(0)
    clock.advance(5)
    execution = await pending
    assert (execution.status, execution.error) == ("FAILED", "States.Timeout")
    assert "TaskTimedOut" in execution.event_types()


async def test_execution_timeout_stops_a_long_wait() -> None:
    clock = FakeClock(autojump=True)
    definition = chain(W={"Type": "Wait", "Seconds": 3600, "End": True})
    definition["TimeoutSeconds"] = 60
    execution = await run_async(definition, {}, clock=clock)
    assert (execution.status, execution.error) == ("TIMED_OUT", "States.Timeout")
    assert execution.event_types()[-1] == "ExecutionTimedOut"


async def test_wait_until_a_timestamp_sleeps_on_the_clock() -> None:
    clock = FakeClock(start=1_700_000_000.0, autojump=True)
    definition = chain(W={"Type": "Wait", "TimestampPath": "$.at", "End": True})
    execution = await run_async(definition, {"at": "2023-11-14T22:23:20Z"}, clock=clock)
    assert execution.status == "SUCCEEDED"
    assert clock.time() == pytest.approx(1_700_000_000.0)


async def test_async_tasks_are_awaited_and_run_works_inside_a_loop() -> None:
    async def shout(event: Any, context: TaskContext) -> Any:
        await asyncio.sleep(0)
        return event.upper()

    definition = chain(T={"Type": "Task", "Resource": "shout", "End": True})
    assert (await run_async(definition, "hi", functions={"shout": shout})).output == "HI"
    assert run(definition, "hi", functions={"shout": shout}).output == "HI"


def test_history_uses_step_functions_event_names() -> None:
    definition = chain(
        P={
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
                {"StartAt": "B", "States": {"B": {"Type": "Pass", "Result": 2, "End": True}}},
            ],
            "Next": "M",
        },
        M={
            "Type": "Map",
            "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": True}}},
            "End": True,
        },
    )
    execution = run(definition, [1])
    types = execution.event_types()
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    for name in (
        "ParallelStateEntered",
        "ParallelStateStarted",
        "ParallelStateSucceeded",
        "MapStateStarted",
        "MapIterationStarted",
        "MapIterationSucceeded",
        "MapStateExited",
    ):
        assert name in types
    ids = [event.id for event in execution.history]
    assert ids == list(range(1, len(ids) + 1))
    assert execution.output == [[1], 2]


def test_a_failing_branch_stops_the_parallel_state_with_its_error() -> None:
    definition = chain(
        P={
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 100, "End": True}}},
                {
                    "StartAt": "F",
                    "States": {"F": {"Type": "Fail", "Error": "Broken", "Cause": "b"}},
                },
            ],
            "End": True,
        },
    )
    execution = run(definition, {}, clock=FakeClock())
    assert (execution.status, execution.error, execution.cause) == ("FAILED", "Broken", "b")


def test_map_max_concurrency_bounds_running_iterations() -> None:
    running = 0
    peak = 0

    async def work(event: Any, context: TaskContext) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1
        return event

    definition = chain(
        M={
            "Type": "Map",
            "MaxConcurrency": 2,
            "ItemProcessor": {
                "StartAt": "T",
                "States": {"T": {"Type": "Task", "Resource": "work", "End": True}},
            },
            "End": True,
        }
    )
    execution = run(definition, list(range(6)), functions={"work": work})
    assert execution.output == list(range(6))
    assert peak == 2


def test_task_result_that_is_not_json_fails_the_task() -> None:
    definition = chain(T={"Type": "Task", "Resource": "bad", "End": True})
    execution = run(definition, {}, functions={"bad": lambda e, c: object()})
    assert (execution.status, execution.error) == ("FAILED", "States.TaskFailed")


def test_a_task_sees_the_context_object_even_when_no_path_reads_it() -> None:
    seen: list[TaskContext] = []

    def spy(event: Any, context: TaskContext) -> Any:
        seen.append(context)
        return None

    definition = chain(
        Before={"Type": "Pass", "Next": "T"}, T={"Type": "Task", "Resource": "spy", "End": True}
    )
    run(definition, {}, functions={"spy": spy}, name="ctx", clock=FakeClock())
    state = seen[0].context_object["State"]
    assert (state["Name"], state["EnteredTime"]) == ("T", "2023-11-14T22:13:20.000Z")
    assert seen[0].context_object["Execution"]["Name"] == "ctx"


async def test_an_endless_choice_loop_can_be_cancelled_and_lets_others_run() -> None:
    definition = chain(
        Loop={
            "Type": "Choice",
            "Choices": [{"Variable": "$.go", "BooleanEquals": True, "Next": "Loop"}],
            "Default": "End",
        },
        End={"Type": "Succeed"},
    )
    endless = asyncio.ensure_future(run_async(definition, {"go": True}))
    for _ in range(5):  # the endless execution starts and hands the loop back each time
        await asyncio.sleep(0)
    assert not endless.done()
    quick = await run_async(chain(P={"Type": "Pass", "End": True}), {"ok": 1})
    assert quick.output == {"ok": 1}
    endless.cancel()
    with pytest.raises(asyncio.CancelledError):
        await endless
