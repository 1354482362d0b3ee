"""Nested executions: the ``arn:aws:states:::states:startExecution`` task integration.

A Task whose ``Resource`` is ``arn:aws:states:::states:startExecution``
starts another flow, named by ``StateMachineArn`` (a flow name, or an ARN
``arn:aws:states:REGION:ACCOUNT:stateMachine:NAME``) among the executor's
``flows``, with ``Input`` (a JSON value, or a string holding one) and an
optional ``Name``:

* plain (request-response, fire-and-forget): the child starts in the
  background and the task's result is ``{"ExecutionArn", "StartDate"}``
  (StartDate in epoch milliseconds, as the API's JSON gives it). The parent
  does not wait, but the in-memory ``run`` returns only once the children it
  started have ended, so none is left behind on a closing event loop;
* ``.sync``: waits for the child; the result is the DescribeExecution
  shape with ``Input``/``Output`` as JSON text;
* ``.sync:2``: the same with ``Input``/``Output`` as JSON values.

A child that does not succeed fails the task with ``States.TaskFailed`` and
the DescribeExecution shape (with ``Error``/``Cause``) as JSON text for the
cause, as Step Functions does. The child runs in memory, with the parent's
functions, flows, clock and blobs.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Protocol

from reflow.flows.errors import RUNTIME, TASK_FAILED, StatesError

if TYPE_CHECKING:
    from reflow.flows.executor import Executor

__all__ = ["ARN_PREFIX", "START_EXECUTION", "describe", "flow_name", "settle", "start_execution"]

START_EXECUTION = "arn:aws:states:::states:startExecution"
ARN_PREFIX = "arn:aws:states:local:000000000000:stateMachine:"


def flow_name(arn_or_name: str) -> str:
    """The flow name in a state machine ARN (``…:stateMachine:NAME[:VERSION]``), or the name."""
    marker = ":stateMachine:"
    if marker in arn_or_name:
        return arn_or_name.split(marker, 1)[1].split(":", 1)[0]
    return arn_or_name


class Finished(Protocol):
    """What a finished execution offers, in memory (``Execution``) or stored."""

    id: str
    name: str
    input: Any
    output: Any
    status: str
    error: str | None
    cause: str | None
    start_time: float
    stop_time: float | None


def describe(execution: Finished, machine_name: str, *, parsed: bool) -> dict[str, Any]:
    """The DescribeExecution shape of a finished child (JSON values when ``parsed``).

    Used for in-memory children here and for durable ones in ``children.py``.
    """

    def data(value: Any) -> Any:
        return value if parsed else json.dumps(value, separators=(",", ":"))

    shape: dict[str, Any] = {
        "ExecutionArn": execution.id,
        "Input": data(execution.input),
        "InputDetails": {"Included": True},
        "Name": execution.name,
        "StartDate": int(execution.start_time * 1000),
        "StateMachineArn": ARN_PREFIX + machine_name,
        "Status": execution.status,
        "StopDate": int((execution.stop_time or execution.start_time) * 1000),
    }
    if execution.status == "SUCCEEDED":
        shape["Output"] = data(execution.output)
        shape["OutputDetails"] = {"Included": True}
    else:
        shape["Error"] = execution.error
        shape["Cause"] = execution.cause
    return shape


async def start_execution(executor: Executor, resource: str, payload: Any) -> Any:
    """Start (and, for ``.sync``/``.sync:2``, wait for) the child flow ``payload`` names."""
    from reflow.flows.executor import Executor

    pattern = resource[len(START_EXECUTION) :]
    if pattern not in ("", ".sync", ".sync:2"):
        raise StatesError(
            RUNTIME,
            f"{resource}: only request-response, .sync and .sync:2 are supported in memory",
        )
    if not isinstance(payload, dict) or not isinstance(payload.get("StateMachineArn"), str):
        raise StatesError(TASK_FAILED, f"{resource} needs a StateMachineArn string")
    name = flow_name(payload["StateMachineArn"])
    machine = executor.flows.get(name)
    if machine is None:
        raise StatesError("StateMachineDoesNotExist", f"no flow named {name!r} (StateMachineArn)")
    child_input = payload.get("Input", {})
    if isinstance(child_input, str):
        try:
            child_input = json.loads(child_input)
        except ValueError as error:
            raise StatesError("InvalidExecutionInput", f"Input is not JSON: {error}") from None
    child = Executor(
        machine,
        functions=executor.functions,
        clock=executor.clock,
        name=payload.get("Name") if isinstance(payload.get("Name"), str) else None,
        machine_name=name,
        flows=executor.flows,
        blobs=executor.blobs,
    )
    started = executor.clock.time()
    if not pattern:
        task = asyncio.ensure_future(child.run(child_input))
        executor.spawned.add(task)
        task.add_done_callback(executor.spawned.discard)
        return {"ExecutionArn": child.execution_id, "StartDate": int(started * 1000)}
    execution = await child.run(child_input)
    shape = describe(execution, name, parsed=pattern == ".sync:2")
    if execution.status != "SUCCEEDED":
        raise StatesError(TASK_FAILED, json.dumps(shape, separators=(",", ":")))
    return shape


async def settle(executor: Executor) -> None:
    """Wait for every fire-and-forget child ``executor`` started (and theirs)."""
    while executor.spawned:
        await asyncio.gather(*list(executor.spawned), return_exceptions=True)
