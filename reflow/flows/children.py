"""Durable nested executions: states:startExecution (plain, .sync, .sync:2) in the service.

In the durable service a Task starting another flow starts it as a durable
execution of its own (listed, described, surviving a crash), named by the
payload's ``Name`` or ``child-`` and a hash of (execution, state, visit,
attempt) — the same on every redo of the transition, so a crash between
starting the child and saving the parent finds the same child instead of
starting a second one.

* plain: the child is started and the task's result is
  ``{"ExecutionArn", "StartDate"}`` at once;
* ``.sync``/``.sync:2``: the child is started with the parent's name in its
  record, and the save that ends it wakes the parent at once (a due timer in
  the same atomic write, and the service enqueues the parent right after
  it). The parent meanwhile waits on a slow durable timer
  (:data:`POLL_SECONDS`), a fallback only: it looks at the child then too,
  should the wake have been lost. Once the child ended, the task's result is
  the DescribeExecution shape (see :mod:`reflow.flows.nested`), or
  ``States.TaskFailed`` with that shape as the cause. The task's
  ``TimeoutSeconds`` (from when the state was entered) ends the wait with
  ``States.Timeout`` and stops the child, as Step Functions stops the job a
  ``.sync`` task managed (its policy for ``startExecution.sync`` grants
  ``states:StopExecution`` on the child's executions for this).

Stopping a child on the task's timeout comes *before* the parent's save:
should the process die in between, the redo finds the child stopped with
the cause :func:`timeout_cause` gives — the same on every redo — and times
the task out again instead of reporting the stopped child as a failure. A
parent that ends while it waits for ``.sync`` children (stopped, or its own
``TimeoutSeconds``) writes an ``orphan`` timer per child with the save that
ends it; the service stops each child that still runs when the timer fires
(:func:`orphan_cause` names the parent and why).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Mapping
from typing import Any, NamedTuple, Protocol

from reflow.errors import ExecutionAlreadyExistsError, ReflowError
from reflow.flows import interpreter as core
from reflow.flows import nested
from reflow.flows.errors import TASK_FAILED, TIMEOUT
from reflow.flows.history import History
from reflow.flows.store import ABORTED, RUNNING, TIMED_OUT, ExecutionRecord, ExecutionStore

__all__ = [
    "POLL_SECONDS",
    "Pending",
    "StartChild",
    "StopChild",
    "durable_child",
    "handles",
    "orphan_cause",
    "timeout_cause",
    "waited_children",
]

# The fallback look at a running child: its end normally wakes the parent at once.
POLL_SECONDS = 5.0


class StartChild(Protocol):
    """Starts execution ``name`` of ``flow`` on ``input`` (``parent`` waits for it)."""

    def __call__(
        self, flow: str, input: Any, name: str, parent: str | None = None
    ) -> Awaitable[Any]:
        """Start it (the service's start, with the parent recorded in the child)."""


class StopChild(Protocol):
    """Stops execution ``name`` with ``cause`` if it still runs (a no-op otherwise)."""

    def __call__(self, name: str, cause: str) -> Awaitable[Any]:
        """Abort it, as StopExecution does."""


class Pending(NamedTuple):
    """The child ``child`` still runs: look at it again at ``at`` (or when it wakes us)."""

    at: float
    child: str


_PATTERNS = {nested.START_EXECUTION: "", nested.START_EXECUTION + ".sync": ".sync"}
_PATTERNS[nested.START_EXECUTION + ".sync:2"] = ".sync:2"


def handles(resource: str) -> bool:
    """Whether ``resource`` is a startExecution integration run as a durable child."""
    return resource in _PATTERNS


def timeout_cause(parent_id: str, state: str) -> str:
    """The cause a child is stopped with when the ``.sync`` task ``state`` of execution
    ``parent_id`` times out (the same on every redo of that transition)."""
    return f"Stopped by execution {parent_id}: its Task state '{state}' timed out"


def orphan_cause(parent: ExecutionRecord) -> str:
    """The cause a child is stopped with when ``parent``, which waited for it, has ended."""
    why = {ABORTED: "it was stopped", TIMED_OUT: "it timed out"}.get(
        parent.status, f"it ended {parent.status}"
    )
    return f"Stopped by execution {parent.id}: {why}"


def waited_children(wait: Mapping[str, Any] | None) -> list[str]:
    """The nested executions a record's ``wait`` waits for (a .sync task's, or its
    parked Map/Parallel children's)."""
    if wait is None:
        return []
    if wait.get("child") is not None:
        return [wait["child"]]
    return list(wait.get("children", ()))


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
    stop_child: StopChild | None = None,
) -> core.Outcome | Pending:
    """The task's outcome, or :class:`Pending` while the child runs.

    ``stop_child`` stops the child when the task times out (None: it is left).
    """
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
    pattern = _PATTERNS[action.resource]
    loaded = await store.load(name)
    if loaded is None:
        history.add("TaskScheduled", now, name=state, resource=action.resource, parameters=payload)
        try:
            await start_child(flow, child_input, name, record.name if pattern else None)
        except ExecutionAlreadyExistsError:
            pass  # started by an earlier redo of this transition
        except ReflowError as error:
            return core.Failure(TASK_FAILED, str(error))
        history.add("TaskStarted", now, name=state)
        loaded = await store.load(name)
    child = loaded[0] if loaded is not None else None
    if child is not None and not pattern:
        return core.Result({"ExecutionArn": child.id, "StartDate": int(child.start_time * 1000)})
    stopped_here = timeout_cause(record.id, state)
    # Stopped by this task's own timeout (a redo after a crash): it timed out.
    ours = child is not None and child.status == ABORTED and child.cause == stopped_here
    if child is not None and child.status != RUNNING and not ours:
        shape = nested.describe(child, child.flow, parsed=pattern == ".sync:2")
        if child.status == "SUCCEEDED":
            history.add("TaskSucceeded", now, name=state, output=shape)
            return core.Result(shape)
        cause = json.dumps(shape, separators=(",", ":"))
        history.add("TaskFailed", now, name=state, error=TASK_FAILED, cause=cause)
        return core.Failure(TASK_FAILED, cause)
    if action.timeout is not None:
        ends = record.entered_at + action.timeout
        if now >= ends or ours:
            if child is not None and child.status == RUNNING and stop_child is not None:
                # Before the parent's save: a crash in between finds it stopped with
                # this cause on the redo, which times the task out again.
                await stop_child(name, stopped_here)
            history.add("TaskTimedOut", now, name=state, error=TIMEOUT)
            return core.Failure(TIMEOUT, f"Task '{state}' ran past its TimeoutSeconds")
        return Pending(min(now + POLL_SECONDS, ends), name)
    return Pending(now + POLL_SECONDS, name)
