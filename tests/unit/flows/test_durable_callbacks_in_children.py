"""Callback tasks and nested executions inside durable Map iterations and Parallel branches.

Step Functions delivers ``$$.Task.Token`` to a ``.waitForTaskToken`` task in
any state, a Map iteration's included: the iteration waits until
SendTaskSuccess/SendTaskFailure answers it (or its TimeoutSeconds /
HeartbeatSeconds pass, ``States.Timeout`` / ``States.HeartbeatTimeout``),
and the Map ends once every iteration has. Here the waiting child parks (no
worker holds it) and the answer wakes its parent; a restarted service finds
the same wait and honours the same tokens.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows import TaskContext
from reflow.flows.service import FlowService
from reflow.flows.store import InvalidExecutionRequestError
from reflow.testing import FakeClock


@pytest.fixture
def store(memory_or_sqlite: Backend) -> Backend:
    """Each test on memory and on SQLite (conftest.py)."""
    return memory_or_sqlite


class Approvals:
    """A task function handed each token (what a mailer or a job queue would get)."""

    def __init__(self) -> None:
        self.tokens: dict[Any, str] = {}
        self.keys: list[str] = []

    def __call__(self, event: Any, context: TaskContext) -> Any:
        self.tokens[event["item"]] = event["token"]
        self.keys.append(context.idempotency_key)
        return "ignored"


def approval_map(task: dict[str, Any] | None = None, **fan: Any) -> dict[str, Any]:
    ask = {
        "Type": "Task",
        "Resource": "ask.waitForTaskToken",
        "Parameters": {"item.$": "$", "token.$": "$$.Task.Token"},
        "End": True,
        **(task or {}),
    }
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {"StartAt": "Ask", "States": {"Ask": ask}},
                "End": True,
                **fan,
            }
        },
    }


def service(backend: Backend, definition: dict[str, Any], approvals: Approvals) -> FlowService:
    return FlowService(backend, {"f": definition}, functions={"ask": approvals})


async def test_each_iteration_gets_a_token_and_the_map_ends_when_all_are_answered(
    store: Backend,
) -> None:
    approvals = Approvals()
    flows = service(store, approval_map(MaxConcurrency=0), approvals)
    await flows.start_execution("f", {"items": ["a", "b", "c"]}, name="m")
    await flows.drain()
    assert sorted(approvals.tokens) == ["a", "b", "c"]
    assert len(set(approvals.tokens.values())) == 3
    described = await flows.describe("m")
    assert described["status"] == "RUNNING" and described["waiting_for"] == "children"
    await flows.send_task_success(approvals.tokens["b"], {"ok": "b"})
    await flows.drain()
    assert (await flows.describe("m"))["status"] == "RUNNING"
    # An answered token is not awaited any more.
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_success(approvals.tokens["b"], {"again": True})
    await flows.send_task_success(approvals.tokens["c"], {"ok": "c"})
    await flows.send_task_success(approvals.tokens["a"], {"ok": "a"})
    await flows.drain()
    described = await flows.describe("m")
    assert described["status"] == "SUCCEEDED"
    assert described["output"] == [{"ok": "a"}, {"ok": "b"}, {"ok": "c"}]
    # The function was handed each token once: the redos did not call it again.
    assert len(approvals.keys) == 3
    types = [event["type"] for event in await flows.history("m")]
    assert types.count("TaskSucceeded") == 3 and types.count("MapStateEntered") == 1
    assert types.count("MapIterationSucceeded") == 3 and types[-1] == "ExecutionSucceeded"


async def test_a_concurrency_of_one_asks_for_one_item_at_a_time(store: Backend) -> None:
    approvals = Approvals()
    flows = service(store, approval_map(MaxConcurrency=1), approvals)
    await flows.start_execution("f", {"items": [1, 2, 3]}, name="one")
    for item in (1, 2, 3):
        await flows.drain()
        assert sorted(approvals.tokens) == list(range(1, item + 1))
        await flows.send_task_success(approvals.tokens[item], item * 10)
    await flows.drain()
    assert (await flows.describe("one"))["output"] == [10, 20, 30]


async def test_a_failure_fails_the_iteration_with_its_error_and_the_map_catches_it(
    store: Backend,
) -> None:
    approvals = Approvals()
    definition = approval_map(
        MaxConcurrency=0,
        Catch=[{"ErrorEquals": ["Rejected"], "ResultPath": "$.why", "Next": "Refused"}],
    )
    definition["States"]["Refused"] = {"Type": "Pass", "End": True}
    flows = service(store, definition, approvals)
    await flows.start_execution("f", {"items": ["a", "b", "c"]}, name="r")
    await flows.drain()
    await flows.send_task_success(approvals.tokens["a"], "fine")
    await flows.send_task_failure(approvals.tokens["b"], error="Rejected", cause="not this one")
    await flows.drain()
    described = await flows.describe("r")
    assert described["status"] == "SUCCEEDED"
    assert described["output"]["why"] == {"Error": "Rejected", "Cause": "not this one"}
    # The Map failed fast: the third item's token is no longer awaited.
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_success(approvals.tokens["c"], "late")


async def drain(flows: FlowService, clock: FakeClock) -> None:
    """Drain ``flows``, then again once the clock has moved a second: a retry's
    back-off inside a child parks the state (no worker holds it) and the
    parent's timer, due when the back-off ends, wakes it."""
    await flows.drain()
    clock.advance(1)
    await flows.drain()


async def test_catch_and_retry_inside_the_iteration_apply_to_a_failed_token(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    task = {
        "Retry": [{"ErrorEquals": ["Busy"], "IntervalSeconds": 1, "MaxAttempts": 1}],
        "Catch": [{"ErrorEquals": ["Rejected"], "Next": "No"}],
    }
    definition = approval_map(task)
    definition["States"]["Fan"]["ItemProcessor"]["States"]["No"] = {
        "Type": "Pass",
        "Result": "refused",
        "End": True,
    }
    flows = service(store, definition, approvals)
    await flows.start_execution("f", {"items": ["x", "y"]}, name="c")
    await flows.drain()
    first = approvals.tokens["x"]
    await flows.send_task_failure(first, error="Busy")
    await drain(flows, clock)
    retried = approvals.tokens["x"]
    assert retried != first  # the retry is a new attempt: a token of its own
    await flows.send_task_failure(retried, error="Rejected", cause="no")
    await flows.drain()
    await flows.send_task_success(approvals.tokens["y"], "yes")
    await flows.drain()
    described = await flows.describe("c")
    assert described["status"] == "SUCCEEDED"
    assert described["output"] == ["refused", "yes"]


async def test_heartbeats_keep_a_token_alive_and_a_missed_one_times_it_out(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    definition = approval_map({"HeartbeatSeconds": 10, "TimeoutSeconds": 1000})
    flows = service(store, definition, approvals)
    await flows.start_execution("f", {"items": ["a", "b"]}, name="h")
    await flows.drain()
    for _ in range(3):
        clock.advance(6)
        await flows.send_task_heartbeat(approvals.tokens["a"])
        await flows.send_task_heartbeat(approvals.tokens["b"])
        await flows.drain()
    assert (await flows.describe("h"))["status"] == "RUNNING"
    await flows.send_task_success(approvals.tokens["a"], "a")
    clock.advance(11)  # b misses its heartbeat
    await flows.drain()
    described = await flows.describe("h")
    assert described["status"] == "FAILED"
    assert described["error"] == "States.HeartbeatTimeout"
    types = [event["type"] for event in await flows.history("h")]
    assert "TaskTimedOut" in types
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_heartbeat(approvals.tokens["b"])


async def test_timeout_seconds_fails_a_token_nobody_answers(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    flows = service(store, approval_map({"TimeoutSeconds": 30}), approvals)
    await flows.start_execution("f", {"items": [1]}, name="t")
    await flows.drain()
    clock.advance(29)
    await flows.drain()
    assert (await flows.describe("t"))["status"] == "RUNNING"
    clock.advance(2)
    await flows.drain()
    described = await flows.describe("t")
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")


async def test_a_restarted_service_keeps_the_wait_and_honours_the_tokens(
    store: Backend,
) -> None:
    approvals = Approvals()
    definition = approval_map()
    first = service(store, definition, approvals)
    await first.start_execution("f", {"items": ["a", "b", "c"]}, name="s")
    await first.drain()
    await first.send_task_success(approvals.tokens["a"], "A")
    await first.drain()
    # The process is gone; a new one starts on the same backend.
    restarted = service(store, definition, approvals)
    assert await restarted.recover() == 0  # nothing to do until an answer comes
    await restarted.send_task_success(approvals.tokens["b"], "B")
    await restarted.send_task_success(approvals.tokens["c"], "C")
    await restarted.drain()
    described = await restarted.describe("s")
    assert (described["status"], described["output"]) == ("SUCCEEDED", ["A", "B", "C"])
    assert len(approvals.keys) == 3


async def test_a_token_in_a_parallel_branch_and_a_nested_map(store: Backend) -> None:
    approvals = Approvals()
    inner = approval_map()["States"]["Fan"]
    definition = {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "Fan", "States": {"Fan": inner}},
                    {"StartAt": "Plain", "States": {"Plain": {"Type": "Pass", "End": True}}},
                ],
                "End": True,
            }
        },
    }
    flows = service(store, definition, approvals)
    await flows.start_execution("f", {"items": ["p", "q"]}, name="n")
    await flows.drain()
    await flows.send_task_success(approvals.tokens["q"], "Q")
    await flows.drain()
    assert (await flows.describe("n"))["status"] == "RUNNING"
    await flows.send_task_success(approvals.tokens["p"], "P")
    await flows.drain()
    described = await flows.describe("n")
    assert described["status"] == "SUCCEEDED"
    assert described["output"] == [["P", "Q"], {"items": ["p", "q"]}]


def child_flow() -> dict[str, Any]:
    return {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "ask.waitForTaskToken",
                "Parameters": {"item.$": "$.item", "token.$": "$$.Task.Token"},
                "End": True,
            }
        },
    }


def sync_parallel(pattern: str = ".sync:2") -> dict[str, Any]:
    start = {
        "Type": "Task",
        "Resource": "arn:aws:states:::states:startExecution" + pattern,
        "Parameters": {"StateMachineArn": "child", "Input": {"item.$": "$.item"}},
        "End": True,
    }
    return {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "Start", "States": {"Start": start}},
                    {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}},
                ],
                "End": True,
            }
        },
    }


async def test_start_execution_sync_in_a_branch_is_a_durable_child_that_wakes_it(
    store: Backend,
) -> None:
    approvals = Approvals()
    flows = FlowService(
        store, {"f": sync_parallel(), "child": child_flow()}, functions={"ask": approvals}
    )
    await flows.start_execution("f", {"item": "k"}, name="p")
    await flows.drain()
    children = [row for row in await flows.list_executions(flow="child")]
    assert len(children) == 1 and children[0]["status"] == "RUNNING"
    assert (await flows.describe("p"))["waiting_for"] == "children"
    await flows.send_task_success(approvals.tokens["k"], {"done": "k"})
    await flows.drain()
    described = await flows.describe("p")
    assert described["status"] == "SUCCEEDED"
    shape, echoed = described["output"]
    assert shape["Status"] == "SUCCEEDED" and shape["Output"] == {"done": "k"}
    assert shape["Name"] == children[0]["name"] and echoed == {"item": "k"}
    # One child execution, however many times the branch was driven.
    assert len(await flows.list_executions(flow="child")) == 1


async def test_a_failed_sync_child_fails_the_branch_with_its_description(store: Backend) -> None:
    approvals = Approvals()
    flows = FlowService(
        store, {"f": sync_parallel(".sync"), "child": child_flow()}, functions={"ask": approvals}
    )
    await flows.start_execution("f", {"item": "k"}, name="pf")
    await flows.drain()
    await flows.send_task_failure(approvals.tokens["k"], error="Nope", cause="bad")
    await flows.drain()
    described = await flows.describe("pf")
    assert (described["status"], described["error"]) == ("FAILED", "States.TaskFailed")
    assert '"Error":"Nope"' in (described["cause"] or "")


async def test_a_sync_child_survives_a_restart_of_the_service(store: Backend) -> None:
    approvals = Approvals()
    flows_of = {"f": sync_parallel(), "child": child_flow()}
    first = FlowService(store, flows_of, functions={"ask": approvals})
    await first.start_execution("f", {"item": "z"}, name="ps")
    await first.drain()
    restarted = FlowService(store, flows_of, functions={"ask": approvals})
    await restarted.recover()
    await restarted.drain()
    await restarted.send_task_success(approvals.tokens["z"], "Z")
    await restarted.drain()
    described = await restarted.describe("ps")
    assert described["status"] == "SUCCEEDED" and described["output"][0]["Output"] == "Z"
    assert len(await restarted.list_executions(flow="child")) == 1


class Crash(BaseException):
    """Stands in for the process dying in the middle of a call."""


async def test_a_crash_before_the_token_was_handed_over_hands_the_same_one_over_again(
    store: Backend,
) -> None:
    approvals = Approvals()
    calls: list[str] = []

    def dying_once(event: Any, context: TaskContext) -> Any:
        calls.append(event["token"])
        if len(calls) == 1:
            raise Crash()
        return approvals(event, context)

    definition = approval_map()
    first = FlowService(store, {"f": definition}, functions={"ask": dying_once})
    await first.start_execution("f", {"items": ["a"]}, name="k")
    with pytest.raises(Crash):
        await first.drain()
    restarted = FlowService(store, {"f": definition}, functions={"ask": dying_once})
    assert await restarted.recover() == 1
    await restarted.drain()
    assert calls[0] == calls[1] == approvals.tokens["a"]  # the same token, handed over again
    await restarted.send_task_success(approvals.tokens["a"], "A")
    await restarted.drain()
    assert (await restarted.describe("k"))["output"] == ["A"]


async def test_an_answer_while_other_children_still_run_is_not_lost(store: Backend) -> None:
    approvals = Approvals()
    release = asyncio.Event()
    slow_calls: list[str] = []

    async def slow(event: Any, context: TaskContext) -> Any:
        slow_calls.append(context.idempotency_key)
        await release.wait()
        return "slow"

    waiting = approval_map()["States"]["Fan"]["ItemProcessor"]
    waiting["States"]["Ask"]["Parameters"] = {"item": "only", "token.$": "$$.Task.Token"}
    definition = {
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "Branches": [
                    waiting,
                    {
                        "StartAt": "Slow",
                        "States": {"Slow": {"Type": "Task", "Resource": "slow", "End": True}},
                    },
                ],
                "End": True,
            }
        },
    }
    flows = FlowService(store, {"f": definition}, functions={"ask": approvals, "slow": slow})
    await flows.start_execution("f", {}, name="w")
    draining = asyncio.ensure_future(flows.drain())
    for _ in range(500):
        await asyncio.sleep(0.001)
        if "only" in approvals.tokens and slow_calls:
            break
    # The branch waits; the other is still running: the answer comes now.
    await flows.send_task_success(approvals.tokens["only"], "yes")
    release.set()
    await draining
    await flows.drain()
    described = await flows.describe("w")
    assert (described["status"], described["output"]) == ("SUCCEEDED", ["yes", "slow"])
    assert len(slow_calls) == 1  # its result was saved: the redo did not call it again


async def test_stopping_a_waiting_execution_refuses_its_tokens_and_drops_its_children(
    store: Backend,
) -> None:
    approvals = Approvals()
    flows = service(store, approval_map(), approvals)
    await flows.start_execution("f", {"items": [1, 2]}, name="x")
    await flows.drain()
    await flows.stop_execution("x", error="Operator")
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_success(approvals.tokens[1], "late")
    assert await store.kv.scan("flows/c/x/") == []


async def test_the_execution_timeout_ends_a_wait_in_an_iteration(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    definition = {**approval_map(), "TimeoutSeconds": 60}
    flows = service(store, definition, approvals)
    await flows.start_execution("f", {"items": [1]}, name="d")
    await flows.drain()
    clock.advance(61)
    await flows.drain()
    described = await flows.describe("d")
    assert (described["status"], described["error"]) == ("TIMED_OUT", "States.Timeout")
    assert await store.kv.scan("flows/c/d/") == []
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_success(approvals.tokens[1], "late")


async def test_each_iteration_starts_a_sync_child_of_its_own(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    start = sync_parallel()["States"]["Both"]["Branches"][0]["States"]["Start"]
    start["Parameters"] = {"StateMachineArn": "child", "Input": {"item.$": "$"}}
    definition = {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "Start", "States": {"Start": start}},
                "ResultSelector": {"out.$": "$[*].Output"},
                "End": True,
            }
        },
    }
    flows = FlowService(
        store, {"f": definition, "child": child_flow()}, functions={"ask": approvals}
    )
    await flows.start_execution("f", ["u", "v"], name="ms")
    await flows.drain()
    names = {row["name"] for row in await flows.list_executions(flow="child")}
    assert len(names) == 2
    await flows.send_task_success(approvals.tokens["u"], "U")
    await flows.drain()
    # Should the wake be lost, the parent's fallback look finds the child's end.
    clock.advance(5)
    await flows.drain()
    assert (await flows.describe("ms"))["status"] == "RUNNING"
    await flows.send_task_success(approvals.tokens["v"], "V")
    await flows.drain()
    described = await flows.describe("ms")
    assert (described["status"], described["output"]) == ("SUCCEEDED", {"out": ["U", "V"]})


async def test_fire_and_forget_and_token_started_children_in_iterations(store: Backend) -> None:
    approvals = Approvals()
    start = "arn:aws:states:::states:startExecution"
    iteration = {
        "StartAt": "Fire",
        "States": {
            "Fire": {
                "Type": "Task",
                "Resource": start,
                "Parameters": {"StateMachineArn": "echo", "Input": {"item.$": "$"}},
                "ResultPath": "$.fired",
                "Next": "Ask",
            },
            "Ask": {
                "Type": "Task",
                "Resource": start + ".waitForTaskToken",
                "Parameters": {
                    "StateMachineArn": "child",
                    "Input": {"item.$": "$.fired.ExecutionArn", "token.$": "$$.Task.Token"},
                },
                "End": True,
            },
        },
    }
    child = child_flow()
    child["States"]["Ask"]["Parameters"] = {"item.$": "$.item", "token.$": "$.token"}
    definition = {
        "StartAt": "Fan",
        "States": {"Fan": {"Type": "Map", "ItemProcessor": iteration, "End": True}},
    }
    echo = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    flows = FlowService(
        store, {"f": definition, "child": child, "echo": echo}, functions={"ask": approvals}
    )
    await flows.start_execution("f", [{"n": 1}, {"n": 2}], name="ff")
    await flows.drain()
    echoes = await flows.list_executions(flow="echo")
    assert [row["status"] for row in echoes] == ["SUCCEEDED", "SUCCEEDED"]
    assert len(await flows.list_executions(flow="child")) == 2
    # Each started child answers its parent iteration's token (as a human would, here).
    for arn, token in approvals.tokens.items():
        await flows.send_task_success(token, {"from": arn})
    await flows.drain()
    described = await flows.describe("ff")
    assert described["status"] == "SUCCEEDED"
    arns = [row["from"] for row in described["output"]]
    assert {arn.rsplit(":", 1)[1] for arn in arns} == {row["name"] for row in echoes}
    # The redos started no second child anywhere.
    assert len(await flows.list_executions(flow="echo")) == 2
    assert len(await flows.list_executions(flow="child")) == 2


async def test_timeout_seconds_ends_a_sync_wait_in_a_branch_and_stops_the_child(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    definition = sync_parallel()
    definition["States"]["Both"]["Branches"][0]["States"]["Start"]["TimeoutSeconds"] = 12
    flows = FlowService(
        store, {"f": definition, "child": child_flow()}, functions={"ask": approvals}
    )
    await flows.start_execution("f", {"item": "slow"}, name="st")
    await flows.drain()
    for _ in range(3):  # the fallback looks at 5 and 10 s, then the timeout at 12 s
        clock.advance(5)
        await flows.drain()
    described = await flows.describe("st")
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")
    [row] = await flows.list_executions(flow="child")
    child = await flows.describe(row["name"])
    assert child["status"] == "ABORTED"
    # The cause names the execution (here the branch's) whose task timed out.
    assert child["cause"].startswith("Stopped by execution arn:")
    assert child["cause"].endswith("its Task state 'Start' timed out")


async def test_a_timer_due_while_the_state_still_runs_is_not_lost(
    store: Backend, clock: FakeClock
) -> None:
    approvals = Approvals()
    release = asyncio.Event()

    async def slow(event: Any, context: TaskContext) -> Any:
        await release.wait()
        return "slow"

    waiting = approval_map({"TimeoutSeconds": 10})["States"]["Fan"]["ItemProcessor"]
    waiting["States"]["Ask"]["Parameters"] = {"item": "only", "token.$": "$$.Task.Token"}
    slow_branch = {
        "StartAt": "S",
        "States": {"S": {"Type": "Task", "Resource": "slow", "End": True}},
    }
    definition = {
        "StartAt": "Both",
        "States": {"Both": {"Type": "Parallel", "Branches": [waiting, slow_branch], "End": True}},
    }
    flows = FlowService(store, {"f": definition}, functions={"ask": approvals, "slow": slow})
    await flows.start_execution("f", {}, name="tt")
    draining = asyncio.ensure_future(flows.drain())
    for _ in range(500):
        await asyncio.sleep(0.001)
        if "only" in approvals.tokens:
            break
    clock.advance(11)
    assert await flows.fire_due_timers() == 1  # the token's timeout, the state still running
    release.set()
    await draining
    await flows.drain()
    described = await flows.describe("tt")
    assert (described["status"], described["error"]) == ("FAILED", "States.Timeout")


async def test_a_function_that_fails_to_take_the_token_fails_the_task(store: Backend) -> None:
    def refuses(event: Any, context: TaskContext) -> Any:
        raise PermissionError("mailbox full")

    definition = approval_map(
        {"Catch": [{"ErrorEquals": ["PermissionError"], "ResultPath": "$.error", "Next": "Kept"}]}
    )
    definition["States"]["Fan"]["ItemProcessor"]["States"]["Kept"] = {"Type": "Pass", "End": True}
    flows = FlowService(store, {"f": definition}, functions={"ask": refuses})
    await flows.start_execution("f", {"items": [{"n": 1}]}, name="rf")
    await flows.drain()
    described = await flows.describe("rf")
    assert described["status"] == "SUCCEEDED"
    assert described["output"][0]["error"] == {"Error": "PermissionError", "Cause": "mailbox full"}


async def test_a_heartbeat_for_a_task_without_heartbeat_seconds_is_accepted(
    store: Backend,
) -> None:
    approvals = Approvals()
    flows = service(store, approval_map(), approvals)
    await flows.start_execution("f", {"items": ["a"]}, name="hb")
    await flows.drain()
    await flows.send_task_heartbeat(approvals.tokens["a"])  # nothing to restart: accepted
    await flows.send_task_success(approvals.tokens["a"], "A")
    await flows.drain()
    assert (await flows.describe("hb"))["output"] == ["A"]
    with pytest.raises(InvalidExecutionRequestError):
        await flows.send_task_heartbeat(approvals.tokens["a"])


def distributed(definition: dict[str, Any], **fan: Any) -> dict[str, Any]:
    processor = definition["States"]["Fan"]["ItemProcessor"]
    processor["ProcessorConfig"] = {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    definition["States"]["Fan"].update(fan)
    return definition


async def test_distributed_map_child_executions_wait_for_their_tokens(store: Backend) -> None:
    approvals = Approvals()
    flows = service(store, distributed(approval_map(), ToleratedFailureCount=1), approvals)
    await flows.start_execution("f", {"items": ["a", "b", "c"]}, name="dm")
    await flows.drain()
    assert sorted(approvals.tokens) == ["a", "b", "c"]
    assert (await flows.describe("dm"))["waiting_for"] == "children"
    await flows.send_task_success(approvals.tokens["a"], "A")
    await flows.send_task_failure(approvals.tokens["b"], error="Rejected")
    await flows.drain()
    assert (await flows.describe("dm"))["status"] == "RUNNING"
    await flows.send_task_success(approvals.tokens["c"], "C")
    await flows.drain()
    described = await flows.describe("dm")
    assert described["status"] == "SUCCEEDED"
    assert described["output"][0] == "A" and described["output"][2] == "C"
    assert len(approvals.keys) == 3
