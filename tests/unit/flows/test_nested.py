"""Nested executions: Task Resource arn:aws:states:::states:startExecution (plain, .sync, .sync:2).

Shapes from the Step Functions docs ("Start a new AWS Step Functions state
machine from a running execution"): request-response returns ExecutionArn and
StartDate; .sync returns the DescribeExecution output with Output as JSON
text; .sync:2 returns it with Output parsed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.flows import TaskContext, run, run_async
from reflow.flows.service import FlowService
from reflow.testing import FakeClock

START = "arn:aws:states:::states:startExecution"
CHILD_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:child"

CHILD = {
    "StartAt": "Double",
    "States": {"Double": {"Type": "Task", "Resource": "double", "End": True}},
}
FAILING = {"StartAt": "No", "States": {"No": {"Type": "Fail", "Error": "Nope", "Cause": "bad"}}}


def double(event: Any, context: TaskContext) -> Any:
    return {"n": event["n"] * 2}


def parent(resource: str, machine: str = "child", **extra: Any) -> dict[str, Any]:
    parameters = {"StateMachineArn": machine, "Input": {"n.$": "$.n"}, **extra}
    return {
        "StartAt": "Call",
        "States": {
            "Call": {"Type": "Task", "Resource": resource, "Parameters": parameters, "End": True}
        },
    }


def go(definition: Any, flows: dict[str, Any], value: int = 4) -> Any:
    return run(
        definition, {"n": value}, functions={"double": double}, flows=flows, clock=FakeClock()
    )


def test_sync_2_waits_and_returns_the_child_output_as_json() -> None:
    execution = go(parent(START + ".sync:2"), {"child": CHILD})
    assert execution.status == "SUCCEEDED"
    output = execution.output
    assert output["Output"] == {"n": 8}
    assert output["Input"] == {"n": 4}
    assert output["Status"] == "SUCCEEDED"
    assert output["StateMachineArn"].endswith(":stateMachine:child")
    assert output["ExecutionArn"].startswith("arn:aws:states:")


def test_sync_returns_the_child_output_as_json_text() -> None:
    output = go(parent(START + ".sync"), {"child": CHILD}).output
    assert isinstance(output["Output"], str)
    assert json.loads(output["Output"]) == {"n": 8}
    assert json.loads(output["Input"]) == {"n": 4}


def test_a_state_machine_arn_names_the_flow_by_its_last_part() -> None:
    output = go(parent(START + ".sync:2", CHILD_ARN), {"child": CHILD}).output
    assert output["Output"] == {"n": 8}


def test_a_string_input_is_parsed_as_json_and_the_name_is_used() -> None:
    definition = parent(START + ".sync:2", Name="kid-1")
    definition["States"]["Call"]["Parameters"]["Input"] = '{"n": 21}'
    output = go(definition, {"child": CHILD}).output
    assert output["Output"] == {"n": 42}
    assert output["Name"] == "kid-1"


def test_request_response_returns_arn_and_start_date_and_the_child_still_runs() -> None:
    seen: list[Any] = []

    def record(event: Any, context: TaskContext) -> Any:
        seen.append(event)
        return event

    child = {"StartAt": "R", "States": {"R": {"Type": "Task", "Resource": "record", "End": True}}}
    execution = run(
        parent(START),
        {"n": 3},
        functions={"record": record},
        flows={"child": child},
        clock=FakeClock(),
    )
    assert execution.status == "SUCCEEDED"
    assert set(execution.output) == {"ExecutionArn", "StartDate"}
    assert isinstance(execution.output["StartDate"], int)
    assert seen == [{"n": 3}]


def test_a_failed_child_fails_the_sync_task_with_task_failed_and_its_description() -> None:
    execution = go(parent(START + ".sync:2"), {"child": FAILING})
    assert execution.status == "FAILED"
    assert execution.error == "States.TaskFailed"
    cause = json.loads(execution.cause or "")
    assert cause["Status"] == "FAILED"
    assert cause["Error"] == "Nope"
    assert cause["Cause"] == "bad"


def test_a_failed_child_can_be_caught_by_the_parent() -> None:
    definition = parent(START + ".sync")
    call = definition["States"]["Call"]
    del call["End"]
    call["Next"] = "Ok"
    call["Catch"] = [{"ErrorEquals": ["States.TaskFailed"], "Next": "Handled"}]
    definition["States"]["Ok"] = {"Type": "Succeed"}
    definition["States"]["Handled"] = {"Type": "Pass", "Result": "handled", "End": True}
    assert go(definition, {"child": FAILING}).output == "handled"


def test_an_unknown_flow_fails_the_task() -> None:
    execution = go(parent(START + ".sync", "nobody"), {"child": CHILD})
    assert execution.error == "StateMachineDoesNotExist"
    assert "nobody" in (execution.cause or "")


def test_children_can_start_children_of_their_own() -> None:
    middle = parent(START + ".sync:2")
    middle["States"]["Call"]["OutputPath"] = "$.Output"
    output = go(parent(START + ".sync:2", "middle"), {"child": CHILD, "middle": middle}).output
    assert output["Output"] == {"n": 8}


def test_jsonata_arguments_start_a_child() -> None:
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": START + ".sync:2",
                "Arguments": {"StateMachineArn": "child", "Input": {"n": "{% $states.input.n %}"}},
                "Output": "{% $states.result.Output %}",
                "End": True,
            }
        },
    }
    assert go(definition, {"child": CHILD}, 5).output == {"n": 10}


async def finish(service: FlowService, clock: FakeClock, name: str) -> dict[str, Any]:
    """Drain the service, moving the clock on, until execution ``name`` ends."""
    for _ in range(100):
        await service.drain()
        described = await service.describe(name)
        if described["status"] != "RUNNING":
            return described
        clock.advance(0.5)
    raise AssertionError(f"{name} did not finish")


async def test_the_durable_service_runs_nested_sync_children_as_durable_executions() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        service = FlowService(
            backend,
            {"parent": parent(START + ".sync:2"), "text": parent(START + ".sync"), "child": CHILD},
            functions={"double": double},
        )
        await service.start_execution("parent", {"n": 6}, name="p")
        described = await finish(service, clock, "p")
        assert described["status"] == "SUCCEEDED"
        assert described["output"]["Output"] == {"n": 12}
        assert described["output"]["Status"] == "SUCCEEDED"
        # The child is an execution of the service: listed and described on its own.
        child_name = described["output"]["Name"]
        child = await service.describe(child_name)
        assert child["flow"] == "child" and child["output"] == {"n": 12}
        await service.start_execution("text", {"n": 2}, name="t")
        text = await finish(service, clock, "t")
        assert json.loads(text["output"]["Output"]) == {"n": 4}
    finally:
        await backend.close()


async def test_a_failed_durable_child_fails_the_sync_task_with_its_description() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        service = FlowService(backend, {"parent": parent(START + ".sync"), "child": FAILING})
        await service.start_execution("parent", {"n": 1}, name="p")
        described = await finish(service, clock, "p")
        assert described["error"] == "States.TaskFailed"
        assert json.loads(described["cause"])["Error"] == "Nope"
    finally:
        await backend.close()


async def test_a_durable_sync_child_past_the_task_timeout_fails_it() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        slow = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}
        definition = parent(START + ".sync")
        definition["States"]["Call"]["TimeoutSeconds"] = 5
        service = FlowService(backend, {"parent": definition, "child": slow})
        await service.start_execution("parent", {"n": 1}, name="p")
        described = await finish(service, clock, "p")
        assert described["error"] == "States.Timeout"
    finally:
        await backend.close()


async def test_a_durable_fire_and_forget_child_is_started_and_named_once() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        service = FlowService(
            backend,
            {"parent": parent(START, Name="kid"), "child": CHILD},
            functions={"double": double},
        )
        await service.start_execution("parent", {"n": 3}, name="p")
        described = await finish(service, clock, "p")
        assert described["output"]["ExecutionArn"].endswith(":kid")
        assert (await finish(service, clock, "kid"))["output"] == {"n": 6}
    finally:
        await backend.close()


def callback_parent(**parameters: Any) -> dict[str, Any]:
    return {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": START + ".waitForTaskToken",
                "Parameters": {
                    "StateMachineArn": "replier",
                    "Input": {"token.$": "$$.Task.Token", "n.$": "$.n"},
                    **parameters,
                },
                "End": True,
            }
        },
    }


REPLIER = {
    "StartAt": "Reply",
    "States": {"Reply": {"Type": "Task", "Resource": "reply", "End": True}},
}


async def test_wait_for_task_token_starts_a_durable_child_that_answers_with_the_token() -> None:
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    try:
        service = FlowService(backend, {"parent": callback_parent(), "replier": REPLIER})

        async def reply(event: Any, context: TaskContext) -> Any:
            await service.send_task_success(event["token"], {"doubled": event["n"] * 2})
            return "replied"

        service.set_functions({"reply": reply})
        await service.start_execution("parent", {"n": 21}, name="p")
        await service.drain()
        assert (await service.describe("p"))["output"] == {"doubled": 42}
        # The child is a durable execution of its own, listed by the service.
        names = {summary["name"] for summary in await service.list_executions()}
        assert len(names) == 2 and "p" in names
    finally:
        await backend.close()


async def test_wait_for_task_token_on_an_unknown_flow_fails_the_task() -> None:
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    try:
        definition = callback_parent()
        definition["States"]["Call"]["Parameters"]["StateMachineArn"] = "ghost"
        service = FlowService(backend, {"parent": definition})
        await service.start_execution("parent", {"n": 1}, name="p")
        await service.drain()
        described = await service.describe("p")
        assert described["status"] == "FAILED"
        assert described["error"] == "StateMachineDoesNotExist"
    finally:
        await backend.close()


def test_wait_for_task_token_needs_the_service_in_memory() -> None:
    execution = go(callback_parent(), {"replier": REPLIER})
    assert execution.error == "States.Runtime"


async def test_timeout_seconds_bounds_a_sync_wait_for_the_child() -> None:
    # A hand-driven clock: under autojump the child's 600 s Wait would jump past the
    # task's 60 s timer before it could fire (sleeps do not overlap there).
    clock = FakeClock()
    slow_child = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}
    definition = parent(START + ".sync")
    definition["States"]["Call"]["TimeoutSeconds"] = 60
    task = asyncio.ensure_future(
        run_async(definition, {"n": 1}, flows={"child": slow_child}, clock=clock)
    )
    while not task.done():
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(10)
    execution = task.result()
    assert execution.error == "States.Timeout"
    assert execution.stop_time is not None
    assert execution.stop_time - execution.start_time < 120


async def test_a_durable_sync_child_that_ends_wakes_its_parent_without_the_clock_moving() -> None:
    # The parent's own look at the child is a slow fallback timer; the child's end
    # queues the parent at once, so with the clock standing still both finish.
    clock = FakeClock()
    backend = memory_backend(clock)
    try:
        service = FlowService(
            backend,
            {"parent": parent(START + ".sync:2"), "child": CHILD},
            functions={"double": double},
        )
        await service.start_execution("parent", {"n": 4}, name="p")
        await service.drain()
        described = await service.describe("p")
        assert described["status"] == "SUCCEEDED"
        assert described["output"]["Output"] == {"n": 8}
        assert clock.time() == FakeClock().time()
    finally:
        await backend.close()


class Died(BaseException):
    """Stands in for the process dying."""


async def test_the_save_that_ends_a_child_wakes_its_parent_even_if_the_process_dies() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    flows = {
        "parent": parent(START + ".sync"),
        "child": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
    }

    def die_after_the_child_ends(phase: str, name: str, seq: int) -> None:
        if phase == "after" and name != "p":
            raise Died()  # the child's last save is written; its parent is not queued yet

    try:
        dying = FlowService(backend, flows, on_persist=die_after_the_child_ends)
        await dying.start_execution("parent", {"n": 1}, name="p")
        with pytest.raises(Died):
            await dying.drain()
        restarted = FlowService(backend, flows)
        # The parent waits on its fallback timer, not due: only the child's wake can help.
        assert (await restarted.describe("p"))["status"] == "RUNNING"
        assert await restarted.fire_due_timers() == 1
        await restarted.drain()
        assert (await restarted.describe("p"))["status"] == "SUCCEEDED"
    finally:
        await backend.close()
