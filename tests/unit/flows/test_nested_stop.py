"""A ``.sync`` child execution does not outlive the task that waits for it.

Step Functions stops the job a ``.sync`` task manages when the task times out
or its execution is stopped (its ``startExecution.sync`` policy grants
``states:StopExecution`` on the child's executions for that). reflow does
the same: the task's ``TimeoutSeconds``, the parent's own ``TimeoutSeconds``
and a StopExecution of the parent stop the child, with a cause naming the
parent — also when the process dies in between. Memory and SQLite, on a
manual clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows.service import FlowService
from reflow.testing import FakeClock

START = "arn:aws:states:::states:startExecution.sync"
# The child waits ten minutes: only a stop ends it early.
SLOW = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}


def sync_parent(machine: str = "child", **task: Any) -> dict[str, Any]:
    """A flow whose one Task starts ``machine`` with ``.sync`` and waits for it."""
    call = {
        "Type": "Task",
        "Resource": START,
        "Parameters": {"StateMachineArn": machine, "Input": {}, "Name": f"{machine}-1"},
        "End": True,
        **task,
    }
    return {"StartAt": "Call", "States": {"Call": call}}


class Died(BaseException):
    """Stands in for the process dying."""


@pytest.fixture
def backend(memory_or_sqlite: Backend) -> Backend:
    """Each test on memory and on SQLite (conftest.py)."""
    return memory_or_sqlite


async def run_for(service: FlowService, clock: FakeClock, seconds: float) -> None:
    """Drain, then move the clock on in 1 s steps for ``seconds``, draining each time."""
    await service.drain()
    for _ in range(int(seconds)):
        clock.advance(1)
        await service.drain()


async def test_the_tasks_timeout_stops_the_child_with_a_cause_naming_the_parent(
    backend: Backend, clock: FakeClock
) -> None:
    flows = {"parent": sync_parent(TimeoutSeconds=12), "child": SLOW}
    service = FlowService(backend, flows)
    started = await service.start_execution("parent", {}, name="p")
    await run_for(service, clock, 13)
    parent = await service.describe("p")
    child = await service.describe("child-1")
    history = [event["type"] for event in await service.history("child-1")]
    assert (parent["status"], parent["error"]) == ("FAILED", "States.Timeout")
    assert child["status"] == "ABORTED"
    assert (
        child["cause"] == f"Stopped by execution {started['id']}: its Task state 'Call' timed out"
    )
    assert history[-1] == "ExecutionAborted"


async def test_a_crash_between_stopping_the_child_and_saving_the_parent_times_out_again(
    backend: Backend, clock: FakeClock
) -> None:
    flows = {"parent": sync_parent(TimeoutSeconds=12), "child": SLOW}
    armed = False

    def die_before_the_timed_out_save(phase: str, name: str, seq: int) -> None:
        if armed and phase == "before" and name == "p":
            raise Died()  # the child is stopped; the parent's TaskTimedOut is not saved

    dying = FlowService(backend, flows, on_persist=die_before_the_timed_out_save)
    await dying.start_execution("parent", {}, name="p")
    await run_for(dying, clock, 11)
    clock.advance(2)
    armed = True
    with pytest.raises(Died):
        await dying.drain()
    assert (await dying.describe("child-1"))["status"] == "ABORTED"
    assert (await dying.describe("p"))["status"] == "RUNNING"

    restarted = FlowService(backend, flows)
    await restarted.recover()
    await run_for(restarted, clock, 6)  # at most the parent's 5 s fallback look
    parent = await restarted.describe("p")
    events = [event["type"] for event in await restarted.history("p")]
    # Timed out, not failed by the child it stopped itself.
    assert (parent["status"], parent["error"]) == ("FAILED", "States.Timeout")
    assert events.count("TaskTimedOut") == 1 and "TaskFailed" not in events


async def test_stopping_the_parent_stops_its_child_and_grandchild(
    backend: Backend, clock: FakeClock
) -> None:
    flows = {"parent": sync_parent("middle"), "middle": sync_parent("child"), "child": SLOW}
    service = FlowService(backend, flows)
    started = await service.start_execution("parent", {}, name="p")
    await run_for(service, clock, 1)
    assert (await service.describe("child-1"))["status"] == "RUNNING"
    await service.stop_execution("p", error="Enough", cause="tests")
    middle = await service.describe("middle-1")
    child = await service.describe("child-1")
    assert (middle["status"], middle["cause"]) == (
        "ABORTED",
        f"Stopped by execution {started['id']}: it was stopped",
    )
    assert (child["status"], child["cause"]) == (
        "ABORTED",
        f"Stopped by execution {middle['id']}: it was stopped",
    )


async def test_the_parents_own_timeout_stops_its_child(backend: Backend, clock: FakeClock) -> None:
    flows = {"parent": {**sync_parent(), "TimeoutSeconds": 8}, "child": SLOW}
    service = FlowService(backend, flows)
    started = await service.start_execution("parent", {}, name="p")
    await run_for(service, clock, 9)
    assert (await service.describe("p"))["status"] == "TIMED_OUT"
    child = await service.describe("child-1")
    assert (child["status"], child["cause"]) == (
        "ABORTED",
        f"Stopped by execution {started['id']}: it timed out",
    )


class DiesBeforeStoppingChildren(FlowService):
    """A service whose process dies right after saving a parent that has ended."""

    async def _stop_orphan(self, name: str) -> None:
        raise Died()


async def test_a_crash_after_stopping_the_parent_still_stops_the_child(
    backend: Backend, clock: FakeClock
) -> None:
    flows = {"parent": sync_parent(), "child": SLOW}
    dying = DiesBeforeStoppingChildren(backend, flows)
    await dying.start_execution("parent", {}, name="p")
    await run_for(dying, clock, 1)
    with pytest.raises(Died):
        await dying.stop_execution("p")
    assert (await dying.describe("p"))["status"] == "ABORTED"
    assert (await dying.describe("child-1"))["status"] == "RUNNING"

    restarted = FlowService(backend, flows)
    # The timer written with the parent's abort stops the child.
    assert await restarted.fire_due_timers() >= 1
    assert (await restarted.describe("child-1"))["status"] == "ABORTED"


async def test_a_child_that_ends_before_the_timeout_is_not_stopped(
    backend: Backend, clock: FakeClock
) -> None:
    quick = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3, "End": True}}}
    flows = {"parent": sync_parent(TimeoutSeconds=12), "child": quick}
    service = FlowService(backend, flows)
    await service.start_execution("parent", {}, name="p")
    await run_for(service, clock, 14)
    assert (await service.describe("p"))["status"] == "SUCCEEDED"
    assert (await service.describe("child-1"))["status"] == "SUCCEEDED"
