"""Durable Standard executions on the memory backend with a FakeClock.

Each test drives the service by hand (``drain`` runs queued work and due
timers), so time only moves when the test advances the clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend
from reflow.errors import ExecutionAlreadyExistsError, ExecutionNotFoundError
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from reflow.flows.store import InvalidExecutionRequestError
from reflow.testing import FakeClock


def chain(**states: Any) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


class Recorder:
    """A task that records each call's context and returns ``{"seen": input}``."""

    def __init__(self, failures: int = 0, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[Any, TaskContext]] = []

    def __call__(self, event: Any, context: TaskContext) -> Any:
        self.calls.append((event, context))
        if len(self.calls) <= self.failures:
            raise self.error(f"call {len(self.calls)} failed")
        return {"seen": event}


PIPELINE = chain(
    Prepare={"Type": "Pass", "Parameters": {"id.$": "$.id", "step": 1}, "Next": "Work"},
    Work={"Type": "Task", "Resource": "work", "ResultPath": "$.result", "Next": "Check"},
    Check={
        "Type": "Choice",
        "Choices": [{"Variable": "$.step", "NumericEquals": 1, "Next": "Done"}],
        "Default": "Broken",
    },
    Broken={"Type": "Fail", "Error": "Broken"},
    Done={"Type": "Succeed"},
)


async def test_durable_run_gives_the_same_output_and_event_types_as_the_memory_executor(
    backend: Backend, clock: FakeClock
) -> None:
    expected = run(PIPELINE, {"id": 7}, functions={"work": Recorder()}, clock=FakeClock())
    service = FlowService(backend, {"pipe": PIPELINE}, functions={"work": Recorder()})
    started = await service.start_execution("pipe", {"id": 7}, name="one")
    assert started["status"] == "RUNNING"
    await service.drain()
    described = await service.describe("one")
    assert described["status"] == "SUCCEEDED"
    assert described["output"] == expected.output
    history = await service.history("one")
    assert [event["type"] for event in history] == expected.event_types()
    assert [event["id"] for event in history] == list(range(1, len(history) + 1))


async def test_starting_a_running_name_again_with_the_same_input_returns_it(
    backend: Backend,
) -> None:
    service = FlowService(backend, {"pipe": PIPELINE}, functions={"work": Recorder()})
    first = await service.start_execution("pipe", {"id": 1}, name="same")
    again = await service.start_execution("pipe", {"id": 1}, name="same")
    assert again["id"] == first["id"]
    with pytest.raises(ExecutionAlreadyExistsError):
        await service.start_execution("pipe", {"id": 2}, name="same")
    await service.drain()
    assert len(await service.list_executions()) == 1
    # Finished: the name may not be reused, even with the same input.
    with pytest.raises(ExecutionAlreadyExistsError):
        await service.start_execution("pipe", {"id": 1}, name="same")


async def test_unknown_flow_bad_name_and_unknown_execution_are_refused(backend: Backend) -> None:
    service = FlowService(backend, {"pipe": PIPELINE})
    with pytest.raises(InvalidExecutionRequestError) as caught:
        await service.start_execution("nope", {})
    assert caught.value.field == "flow"
    with pytest.raises(InvalidExecutionRequestError) as caught:
        await service.start_execution("pipe", {}, name="has/slash")
    assert caught.value.field == "name"
    with pytest.raises(ExecutionNotFoundError):
        await service.describe("missing")


async def test_ten_minute_wait_and_three_retries_are_durable_timers_on_the_clock(
    backend: Backend, clock: FakeClock
) -> None:
    flaky = Recorder(failures=3)
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
    service = FlowService(backend, {"f": definition}, functions={"flaky": flaky})
    started = time.perf_counter()
    await service.start_execution("f", {"n": 1}, name="slow")
    await service.drain()
    assert (await service.describe("slow"))["waiting_for"] == "timer"
    clock.advance(599)
    await service.drain()
    assert flaky.calls == []  # one second early: still waiting
    for seconds in (1, 10, 20, 40):
        clock.advance(seconds)
        await service.drain()
    assert time.perf_counter() - started < 2.0
    described = await service.describe("slow")
    assert described["status"] == "SUCCEEDED"
    assert described["output"] == {"seen": {"n": 1}}
    assert [context.attempt for _, context in flaky.calls] == [0, 1, 2, 3]
    assert len({context.idempotency_key for _, context in flaky.calls}) == 4
    in_memory = run(
        definition, {"n": 1}, functions={"flaky": Recorder(3)}, clock=FakeClock(autojump=True)
    )
    assert [event["type"] for event in await service.history("slow")] == in_memory.event_types()


async def test_a_state_entered_again_by_a_loop_gets_new_idempotency_keys(
    backend: Backend,
) -> None:
    task = Recorder()
    definition = chain(
        Count={"Type": "Pass", "Parameters": {"n": 0}, "Next": "Call"},
        Call={"Type": "Task", "Resource": "t", "ResultPath": None, "Next": "Add"},
        Add={
            "Type": "Pass",
            "Parameters": {"n.$": "States.MathAdd($.n, 1)"},
            "Next": "Loop",
        },
        Loop={
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericLessThan": 3, "Next": "Call"}],
            "Default": "End",
        },
        End={"Type": "Succeed"},
    )
    service = FlowService(backend, {"loop": definition}, functions={"t": task})
    await service.start_execution("loop", {}, name="loopy")
    await service.drain()
    assert (await service.describe("loopy"))["output"] == {"n": 3}
    keys = [context.idempotency_key for _, context in task.calls]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert all(context.attempt == 0 for _, context in task.calls)


async def test_stop_aborts_a_waiting_execution_and_its_timer_does_nothing(
    backend: Backend, clock: FakeClock
) -> None:
    task = Recorder()
    definition = chain(
        Pause={"Type": "Wait", "Seconds": 60, "Next": "Call"},
        Call={"Type": "Task", "Resource": "t", "End": True},
    )
    service = FlowService(backend, {"f": definition}, functions={"t": task})
    await service.start_execution("f", {}, name="halt")
    await service.drain()
    stopped = await service.stop_execution("halt", error="Operator", cause="not today")
    assert stopped["status"] == "ABORTED"
    clock.advance(61)
    await service.drain()
    assert task.calls == []
    described = await service.describe("halt")
    assert (described["status"], described["error"]) == ("ABORTED", "Operator")
    assert (await service.history("halt"))[-1]["type"] == "ExecutionAborted"
    with pytest.raises(InvalidExecutionRequestError):
        await service.stop_execution("halt")


async def test_redrive_runs_a_failed_execution_again_from_the_failed_state(
    backend: Backend,
) -> None:
    first, second = Recorder(), Recorder(failures=1, error=RuntimeError)
    definition = chain(
        One={"Type": "Task", "Resource": "first", "Next": "Two"},
        Two={
            "Type": "Task",
            "Resource": "second",
            "Parameters": {"redrives.$": "$$.Execution.RedriveCount", "in.$": "$"},
            "End": True,
        },
    )
    service = FlowService(backend, {"f": definition}, functions={"first": first, "second": second})
    await service.start_execution("f", {"x": 1}, name="again")
    await service.drain()
    failed = await service.describe("again")
    assert (failed["status"], failed["error"], failed["state"]) == ("FAILED", "RuntimeError", "Two")
    with pytest.raises(InvalidExecutionRequestError):
        await service.stop_execution("again")  # a failed execution cannot be stopped
    redriven = await service.redrive("again")
    assert redriven["status"] == "RUNNING"
    await service.drain()
    done = await service.describe("again")
    assert done["status"] == "SUCCEEDED"
    assert done["redrive_count"] == 1
    assert len(first.calls) == 1  # the state before the failure did not run again
    assert second.calls[-1][0]["redrives"] == 1
    types = [event["type"] for event in await service.history("again")]
    assert types.count("ExecutionFailed") == 1 and "ExecutionRedriven" in types
    with pytest.raises(InvalidExecutionRequestError):
        await service.redrive("again")  # it succeeded: nothing to redrive


async def test_execution_timeout_seconds_times_out_a_long_wait(
    backend: Backend, clock: FakeClock
) -> None:
    definition = {
        "TimeoutSeconds": 10,
        **chain(Pause={"Type": "Wait", "Seconds": 100, "End": True}),
    }
    service = FlowService(backend, {"f": definition})
    await service.start_execution("f", {}, name="late")
    await service.drain()
    clock.advance(9)
    await service.drain()
    assert (await service.describe("late"))["status"] == "RUNNING"
    clock.advance(1)
    await service.drain()
    described = await service.describe("late")
    assert (described["status"], described["error"]) == ("TIMED_OUT", "States.Timeout")
    assert (await service.history("late"))[-1]["type"] == "ExecutionTimedOut"


CALLBACK = chain(
    Ask={
        "Type": "Task",
        "Resource": "reflow:function:ask.waitForTaskToken",
        "Parameters": {"token.$": "$$.Task.Token", "q.$": "$.q"},
        "TimeoutSeconds": 300,
        "HeartbeatSeconds": 30,
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True,
    },
    Caught={"Type": "Pass", "End": True},
)


def callback_service(backend: Backend) -> tuple[FlowService, list[Any]]:
    asked: list[Any] = []

    def ask(event: Any, context: TaskContext) -> None:
        asked.append(event)

    return FlowService(backend, {"cb": CALLBACK}, functions={"ask": ask}), asked


async def test_wait_for_task_token_resumes_with_the_output_sent_for_the_token(
    backend: Backend,
) -> None:
    service, asked = callback_service(backend)
    await service.start_execution("cb", {"q": "approve?"}, name="ask1")
    await service.drain()
    assert (await service.describe("ask1"))["waiting_for"] == "token"
    assert asked[0]["q"] == "approve?"
    await service.send_task_success(asked[0]["token"], {"approved": True})
    await service.drain()
    described = await service.describe("ask1")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"approved": True})
    with pytest.raises(InvalidExecutionRequestError):
        await service.send_task_success(asked[0]["token"], {})  # already answered
    with pytest.raises(InvalidExecutionRequestError):
        await service.send_task_success("not-a-token", {})


async def test_task_failure_sent_for_a_token_is_caught_by_the_catcher(backend: Backend) -> None:
    service, asked = callback_service(backend)
    await service.start_execution("cb", {"q": "?"}, name="ask2")
    await service.drain()
    await service.send_task_failure(asked[0]["token"], error="Rejected", cause="no")
    await service.drain()
    described = await service.describe("ask2")
    assert described["status"] == "SUCCEEDED"
    assert described["output"]["error"] == {"Error": "Rejected", "Cause": "no"}


async def test_heartbeats_keep_a_callback_alive_and_silence_fails_it(
    backend: Backend, clock: FakeClock
) -> None:
    service, asked = callback_service(backend)
    await service.start_execution("cb", {"q": "?"}, name="ask3")
    await service.drain()
    for _ in range(3):
        clock.advance(20)
        await service.send_task_heartbeat(asked[0]["token"])
        await service.drain()
    assert (await service.describe("ask3"))["status"] == "RUNNING"
    clock.advance(30)
    await service.drain()
    described = await service.describe("ask3")
    assert described["status"] == "SUCCEEDED"
    assert described["output"]["error"]["Error"] == "States.HeartbeatTimeout"
    assert "TaskTimedOut" in [event["type"] for event in await service.history("ask3")]


async def test_callback_timeout_seconds_fails_it_with_states_timeout(
    backend: Backend, clock: FakeClock
) -> None:
    service, asked = callback_service(backend)
    await service.start_execution("cb", {"q": "?"}, name="ask4")
    await service.drain()
    for _ in range(11):
        clock.advance(29)
        await service.send_task_heartbeat(asked[0]["token"])
        await service.drain()
    described = await service.describe("ask4")
    assert described["output"]["error"]["Error"] == "States.Timeout"


async def test_parallel_and_map_run_inside_one_durable_transition(backend: Backend) -> None:
    definition = chain(
        Fan={
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {
                "StartAt": "Double",
                "States": {"Double": {"Type": "Task", "Resource": "double", "End": True}},
            },
            "Next": "Both",
        },
        Both={
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": "a", "End": True}}},
                {"StartAt": "B", "States": {"B": {"Type": "Pass", "End": True}}},
            ],
            "End": True,
        },
    )
    service = FlowService(
        backend, {"fan": definition}, functions={"double": lambda event, _: event * 2}
    )
    await service.start_execution("fan", {"items": [1, 2, 3]}, name="fan1")
    await service.drain()
    described = await service.describe("fan1")
    assert described["output"] == ["a", [2, 4, 6]]


async def test_a_crash_before_a_save_redoes_the_transition_with_the_same_key(
    backend: Backend,
) -> None:
    task = Recorder()
    crashes = {"left": 1}

    def crash_once(phase: str, name: str, seq: int) -> None:
        if phase == "before" and seq == 2 and crashes["left"]:
            crashes["left"] -= 1
            raise KeyboardInterrupt  # stands in for the process dying before the write

    definition = chain(
        A={"Type": "Pass", "Next": "B"},
        B={"Type": "Task", "Resource": "t", "End": True},
    )
    crashing = FlowService(backend, {"f": definition}, functions={"t": task}, on_persist=crash_once)
    await crashing.start_execution("f", {"v": 1}, name="c1")
    with pytest.raises(KeyboardInterrupt):
        await crashing.drain()
    # A new service (the restarted process) finds it RUNNING and runs it to the end.
    restarted = FlowService(backend, {"f": definition}, functions={"t": task})
    assert await restarted.recover() == 1
    await restarted.drain()
    assert (await restarted.describe("c1"))["status"] == "SUCCEEDED"
    assert len(task.calls) == 2
    assert len({context.idempotency_key for _, context in task.calls}) == 1
    types = [event["type"] for event in await restarted.history("c1")]
    assert types.count("TaskSucceeded") == 1 and types.count("ExecutionSucceeded") == 1


async def test_list_filters_by_flow_and_status(backend: Backend) -> None:
    done = chain(Only={"Type": "Pass", "End": True})
    waits = chain(Only={"Type": "Wait", "Seconds": 5, "End": True})
    service = FlowService(backend, {"done": done, "waits": waits})
    await service.start_execution("done", {}, name="d1")
    await service.start_execution("waits", {}, name="w1")
    await service.drain()
    assert [row["name"] for row in await service.list_executions(status="RUNNING")] == ["w1"]
    assert [row["name"] for row in await service.list_executions(flow="done")] == ["d1"]
    with pytest.raises(InvalidExecutionRequestError):
        await service.list_executions(status="SLEEPING")


async def test_two_services_sharing_a_backend_finish_each_execution_exactly_once() -> None:
    # Real time here: the services' own workers and timer loops do the work.
    shared = memory_backend()
    task = Recorder()
    definition = chain(
        A={"Type": "Task", "Resource": "t", "Next": "B"},
        B={"Type": "Pass", "Next": "C"},
        C={"Type": "Task", "Resource": "t", "End": True},
    )
    services = [
        FlowService(shared, {"f": definition}, functions={"t": task}, block=0.01, poll=0.01)
        for _ in range(2)
    ]
    try:
        for index in range(20):
            await services[index % 2].start_execution("f", {"i": index}, name=f"e{index}")
        # Both recover every execution: each is queued at least twice, on purpose.
        for service in services:
            await service.start()
        for _ in range(500):
            rows = await services[0].list_executions(status="SUCCEEDED")
            if len(rows) == 20:
                break
            await asyncio.sleep(0.01)
        assert len(rows) == 20
        for index in range(20):
            types = [event["type"] for event in await services[1].history(f"e{index}")]
            assert types.count("ExecutionSucceeded") == 1
            assert types.count("TaskSucceeded") == 2
        keys_per_call = [context.idempotency_key for _, context in task.calls]
        assert len(set(keys_per_call)) == 40  # two tasks per execution, one key each
    finally:
        for service in services:
            await service.stop()
        await shared.close()


async def test_an_execution_whose_state_left_the_definition_fails_with_states_runtime(
    backend: Backend,
) -> None:
    before = chain(Pause={"Type": "Wait", "Seconds": 0, "Next": "Old"}, Old={"Type": "Succeed"})
    after = chain(New={"Type": "Succeed"})
    first = FlowService(backend, {"f": before})
    await first.start_execution("f", {}, name="moved")
    # Saved at its first state; the next process has a flow of that name without it.
    renamed = FlowService(backend, {"f": after})
    stranger = FlowService(backend, {"g": after})
    await stranger.drain()
    assert (await stranger.describe("moved"))["status"] == "RUNNING"  # not its flow: untouched
    await renamed.recover()
    await renamed.drain()
    described = await renamed.describe("moved")
    assert (described["status"], described["error"]) == ("FAILED", "States.Runtime")


async def test_a_wait_ending_between_milliseconds_wakes_when_its_timer_is_due(
    backend: Backend, clock: FakeClock
) -> None:
    clock.set(1_700_000_000.0004)
    service = FlowService(backend, {"f": chain(W={"Type": "Wait", "Seconds": 1, "End": True})})
    await service.start_execution("f", {}, name="ms")
    await service.drain()
    due = await service.store.next_timer()
    assert due is not None
    clock.set(due)  # the moment the timer reads as due
    await service.drain()
    assert (await service.describe("ms"))["status"] == "SUCCEEDED"


async def test_a_wake_timer_read_early_by_a_lagging_clock_is_kept_not_lost(
    backend: Backend, clock: FakeClock
) -> None:
    from reflow.flows.store import timer_key

    service = FlowService(backend, {"f": chain(W={"Type": "Wait", "Seconds": 10, "End": True})})
    await service.start_execution("f", {}, name="skew")
    await service.drain()
    # A process whose clock ran ahead filed a wake for now; here the Wait has 10 s to go.
    await backend.kv.put(timer_key(clock.time(), "skew", "wake"), b"")
    assert await service.fire_due_timers() == 0
    assert (await service.store.due_timers(clock.time()))[0].name == "skew"
    clock.advance(10)
    await service.drain()
    assert (await service.describe("skew"))["status"] == "SUCCEEDED"
    assert await service.store.next_timer() is None


async def test_a_crash_between_saving_a_callback_wait_and_calling_its_function_resends(
    backend: Backend,
) -> None:
    asked: list[Any] = []

    def ask(event: Any, context: TaskContext) -> None:
        asked.append(event)

    def crash_after_first_save(phase: str, name: str, seq: int) -> None:
        if phase == "after" and seq == 1:
            raise KeyboardInterrupt  # the process dies right after the wait is saved

    crashing = FlowService(
        backend, {"cb": CALLBACK}, functions={"ask": ask}, on_persist=crash_after_first_save
    )
    await crashing.start_execution("cb", {"q": "?"}, name="lost")
    with pytest.raises(KeyboardInterrupt):
        await crashing.drain()
    assert asked == []
    restarted = FlowService(backend, {"cb": CALLBACK}, functions={"ask": ask})
    assert await restarted.recover() == 1
    await restarted.drain()
    assert len(asked) == 1
    assert await restarted.recover() == 0  # handed over: nothing left to do until answered
    await restarted.send_task_success(asked[0]["token"], {"late": "but there"})
    await restarted.drain()
    described = await restarted.describe("lost")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"late": "but there"})


async def test_express_flows_run_in_memory_and_cannot_be_stopped_or_redriven(
    backend: Backend,
) -> None:
    quick = chain(Shape={"Type": "Pass", "Parameters": {"v.$": "$.v"}, "End": True})
    service = FlowService(backend, {"quick": quick, "pipe": PIPELINE}, express=["quick"])
    started = await service.start_execution("quick", {"v": 3}, name="q1")
    assert started["kind"] == "EXPRESS"
    for _ in range(100):
        if (await service.describe("q1"))["status"] != "RUNNING":
            break
        await asyncio.sleep(0)
    described = await service.describe("q1")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"v": 3})
    types = [event["type"] for event in await service.history("q1")]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert await backend.kv.scan("flows/x/") == []  # nothing persisted
    assert [row["name"] for row in await service.list_executions(flow="quick")] == ["q1"]
    with pytest.raises(InvalidExecutionRequestError):
        await service.stop_execution("q1")
    with pytest.raises(InvalidExecutionRequestError):
        await service.redrive("q1")
    with pytest.raises(ExecutionAlreadyExistsError):
        await service.start_execution("quick", {"v": 3}, name="q1")  # finished: name taken
    await service.stop()
