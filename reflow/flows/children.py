"""Durable nested executions: states:startExecution (plain, .sync, .sync:2) in the service.

In the durable service a Task starting another flow starts it as a durable
execution of its own (listed, described, surviving a crash), named by the
payload's ``Name`` or ``child-`` and a hash of (execution, state, visit,
attempt) — the same on every redo of the transition, so a crash between
starting the child and saving the parent finds the same child instead of
starting a second one.

* plain: the child is started and the task's result is
  ``{"ExecutionArn", "StartDate"}`` at once;
* ``.sync``/``.sync:2``: the parent polls the child's record on a durable
  timer (every :data:`POLL_SECONDS` on the clock) until it ends, then the
  task's result is the DescribeExecution shape (see
  :mod:`reflow.flows.nested`), or ``States.TaskFailed`` with that shape as
  the cause. The task's ``TimeoutSeconds`` (from when the state was entered)
  ends the wait with ``States.Timeout``; the child is left to finish.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reflow.errors import ExecutionAlreadyExistsError, ReflowError
from reflow.flows import interpreter as core
from reflow.flows import nested
from reflow.flows.errors import TASK_FAILED, TIMEOUT
from reflow.flows.history import History
from reflow.flows.store import RUNNING, ExecutionRecord, ExecutionStore

__all__ = ["POLL_SECONDS", "StartChild", "durable_child", "handles"]

POLL_SECONDS = 0.5
StartChild = Callable[[str, Any, str], Awaitable[Any]]
_PATTERNS = {nested.START_EXECUTION: "", nested.START_EXECUTION + ".sync": ".sync"}
_PATTERNS[nested.START_EXECUTION + ".sync:2"] = ".sync:2"


def handles(resource: str) -> bool:
    """Whether ``resource`` is a startExecution integration run as a durable child."""
    return resource in _PATTERNS


def _child_name(record: ExecutionRecord, payload: Mapping[str, Any]) -> str:
    name = payload.get("Name")
    if isinstance(name, str):
        return name
    seed = f"{record.id}/{record.state}@{record.visit}/{sum(record.attempts)}/child"
    return "child-" + hashlib.sha256(seed.encode()).hexdigest()[:40]


async def durable_child(
    store: ExecutionStore,
    start_child: StartChild,
    machines: Mapping[str, Any],
    record: ExecutionRecord,
    action: core.Invoke,
    history: History,
    now: float,
) -> core.Outcome | float:
    """The task's outcome, or the time at which to look at the child again."""
    state = record.state
    payload = action.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("StateMachineArn"), str):
        return core.Failure(TASK_FAILED, f"{action.resource} needs a StateMachineArn string")
    flow = nested.flow_name(payload["StateMachineArn"])
    if flow not in machines:
        return core.Failure("StateMachineDoesNotExist", f"no flow named {flow!r}")
    child_input = payload.get("Input", {})
    if isinstance(child_input, str):
        try:
            child_input = json.loads(child_input)
        except ValueError as error:
            return core.Failure("InvalidExecutionInput", f"Input is not JSON: {error}")
    name = _child_name(record, payload)
    loaded = await store.load(name)
    if loaded is None:
        history.add("TaskScheduled", now, name=state, resource=action.resource, parameters=payload)
        try:
            await start_child(flow, child_input, name)
        except ExecutionAlreadyExistsError:
            pass  # started by an earlier redo of this transition
        except ReflowError as error:
            return core.Failure(TASK_FAILED, str(error))
        history.add("TaskStarted", now, name=state)
        loaded = await store.load(name)
    pattern = _PATTERNS[action.resource]
    child = loaded[0] if loaded is not None else None
    if child is not None and not pattern:
        return core.Result({"ExecutionArn": child.id, "StartDate": int(child.start_time * 1000)})
    if child is not None and child.status != RUNNING:
        shape = nested.describe(child, child.flow, parsed=pattern == ".sync:2")
        if child.status == "SUCCEEDED":
            history.add("TaskSucceeded", now, name=state, output=shape)
            return core.Result(shape)
        cause = json.dumps(shape, separators=(",", ":"))
        history.add("TaskFailed", now, name=state, error=TASK_FAILED, cause=cause)
        return core.Failure(TASK_FAILED, cause)
    if action.timeout is not None:
        ends = record.entered_at + action.timeout
        if now >= ends:
            history.add("TaskTimedOut", now, name=state, error=TIMEOUT)
            return core.Failure(TIMEOUT, f"Task '{state}' ran past its TimeoutSeconds")
        return min(now + POLL_SECONDS, ends)
    return now + POLL_SECONDS
