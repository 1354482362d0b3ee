"""Task states in memory: finding the function a ``Resource`` names and calling it.

``functions`` maps a Task's ``Resource`` to a callable ``(input, context)``.
A resource also resolves by function name when written
``reflow:function:NAME`` or ``arn:aws:lambda:REGION:ACCOUNT:function:NAME``;
``arn:aws:states:::lambda:invoke`` takes ``FunctionName`` and ``Payload``
from its arguments and returns ``{"Payload": …, "StatusCode": 200}``;
``arn:aws:states:::states:startExecution`` starts a child flow (see
:mod:`reflow.flows.nested`). The integrations with reflow's event bus,
tables and edge cache (:mod:`reflow.flows.integrations`) are task functions
keyed by their resource ARN in the same mapping; one whose subsystem was not
given fails with ``States.Runtime`` saying so.

:func:`invoke` records the task's history events and turns every way a call
can end — a result, the function's own exception, ``TimeoutSeconds``,
``HeartbeatSeconds``, a result that is not JSON — into the
:class:`~reflow.flows.actions.Outcome` the interpreter steps with. Only the
execution's own deadline passing escapes, as
:class:`~reflow.flows.calls.ExecutionTimedOut`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reflow.flows import integrations, nested
from reflow.flows import interpreter as core
from reflow.flows.calls import Beats, ExecutionTimedOut, HeartbeatTimeout, TaskTimeout, call
from reflow.flows.errors import HEARTBEAT_TIMEOUT, RUNTIME, TASK_FAILED, TIMEOUT, StatesError
from reflow.flows.history import History
from reflow.flows.values import json_copy

if TYPE_CHECKING:
    from reflow.flows.executor import Executor

__all__ = ["TaskContext", "TaskFunction", "invoke", "resolve_function"]

TaskFunction = Callable[[Any, "TaskContext"], Any]

_LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"


@dataclass(frozen=True)
class TaskContext:
    """What a task function is told about the call (its second argument).

    ``idempotency_key`` is the same for every delivery of one attempt and
    differs between attempts: execution, state and attempt number. Durable
    executions also set ``visit`` (the transition at which the state was
    entered), so a state entered again by a loop gets keys of its own.
    """

    execution_name: str
    execution_id: str
    state_name: str
    attempt: int
    context_object: Mapping[str, Any]
    visit: int | None = None
    beats: Beats | None = field(default=None, repr=False, compare=False)

    def heartbeat(self) -> None:
        """Tell the executor the task is alive (resets its ``HeartbeatSeconds`` timer).

        A task whose state sets ``HeartbeatSeconds`` and that goes longer than
        that without calling this fails with ``States.HeartbeatTimeout``.
        """
        if self.beats is not None:
            self.beats.beat()

    @property
    def idempotency_key(self) -> str:
        """``execution/state/attempt`` (``execution/state@visit/attempt`` when durable)."""
        if self.visit is None:
            return f"{self.execution_id}/{self.state_name}/{self.attempt}"
        return f"{self.execution_id}/{self.state_name}@{self.visit}/{self.attempt}"


def resolve_function(
    resource: str, functions: Mapping[str, TaskFunction]
) -> tuple[str, TaskFunction] | None:
    """The name and callable a Task ``Resource`` names, or None."""
    if resource in functions:
        return resource, functions[resource]
    name = resource
    if resource.startswith("reflow:function:"):
        name = resource[len("reflow:function:") :]
    elif resource.startswith("arn:aws:lambda:"):
        parts = resource.split(":")
        # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
        if len(parts) >= 7 and parts[5] == "function":
            name = parts[6]
    found = functions.get(name)
    return (name, found) if found is not None else None


async def invoke(
    executor: Executor,
    action: core.Invoke,
    cursor: core.Cursor,
    context: Mapping[str, Any],
    history: History,
) -> core.Outcome:
    """Call the task ``action`` names for ``executor``'s execution; its outcome."""
    state_name = cursor.state
    clock = executor.clock
    history.add(
        "TaskScheduled",
        clock.time(),
        name=state_name,
        resource=action.resource,
        parameters=action.payload,
    )
    payload, wrap = action.payload, False
    resource = action.resource
    if resource.startswith(_LAMBDA_INVOKE):
        if not isinstance(payload, dict) or "FunctionName" not in payload:
            return _failed(
                executor, history, state_name, TASK_FAILED, "lambda:invoke needs a FunctionName"
            )
        resource, payload, wrap = str(payload["FunctionName"]), payload.get("Payload"), True
    if resource.startswith(nested.START_EXECUTION):
        return await _start_execution(executor, action, resource, payload, state_name, history)
    found = resolve_function(resource, executor.functions)
    if found is None:
        missing = integrations.unavailable(resource)
        if missing is not None:
            # An integration whose subsystem was not given: say what is missing.
            return _failed(executor, history, state_name, RUNTIME, missing)
        return _failed(
            executor, history, state_name, TASK_FAILED, f"no function for resource {resource!r}"
        )
    _, function = found
    beats = Beats(clock)
    task_context = TaskContext(
        executor.name,
        executor.execution_id,
        state_name,
        cursor.retry_count,
        context,
        executor.visit,
        beats,
    )
    history.add("TaskStarted", clock.time(), name=state_name)
    try:
        result = await call(
            lambda: function(json_copy(payload), task_context),
            clock,
            limit=_limit(executor, action.timeout),
            heartbeat=action.heartbeat,
            beats=beats,
            check=executor.check_deadline,
        )
    except ExecutionTimedOut:
        raise  # the whole execution ran out of time: not the task's error
    except TaskTimeout:
        history.add("TaskTimedOut", clock.time(), name=state_name, error=TIMEOUT)
        return core.Failure(TIMEOUT, f"Task '{state_name}' ran past its TimeoutSeconds")
    except HeartbeatTimeout:
        history.add("TaskTimedOut", clock.time(), name=state_name, error=HEARTBEAT_TIMEOUT)
        return core.Failure(
            HEARTBEAT_TIMEOUT,
            f"Task '{state_name}' sent no heartbeat for {action.heartbeat} seconds",
        )
    except StatesError as error:
        return _failed(executor, history, state_name, error.name, error.cause)
    except Exception as error:  # a task's own exception becomes its ASL error
        return _failed(executor, history, state_name, _error_name(error), _error_cause(error))
    try:
        # A copy through JSON: the result must be JSON, and later states must not
        # share objects the function may still hold.
        result = json.loads(json.dumps(result))
    except (TypeError, ValueError) as error:
        return _failed(
            executor, history, state_name, TASK_FAILED, f"the result is not JSON: {error}"
        )
    if wrap:
        result = {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}
    history.add("TaskSucceeded", clock.time(), name=state_name, output=result)
    return core.Result(result)


async def _start_execution(
    executor: Executor,
    action: core.Invoke,
    resource: str,
    payload: Any,
    state_name: str,
    history: History,
) -> core.Outcome:
    """A states:startExecution task: a child flow, bounded like any task call."""
    clock = executor.clock
    try:
        # TimeoutSeconds bounds a .sync wait like any task call.
        result = await call(
            lambda: nested.start_execution(executor, resource, payload),
            clock,
            limit=_limit(executor, action.timeout),
            heartbeat=None,
            beats=Beats(clock),
            check=executor.check_deadline,
        )
    except ExecutionTimedOut:
        raise
    except TaskTimeout:
        history.add("TaskTimedOut", clock.time(), name=state_name, error=TIMEOUT)
        return core.Failure(TIMEOUT, f"Task '{state_name}' ran past its TimeoutSeconds")
    except StatesError as error:
        return _failed(executor, history, state_name, error.name, error.cause)
    history.add("TaskSucceeded", clock.time(), name=state_name, output=result)
    return core.Result(result)


def _limit(executor: Executor, timeout: float | None) -> float | None:
    """The task's TimeoutSeconds, cut short by the execution's deadline."""
    deadline = executor.deadline
    if deadline is None:
        return timeout
    remaining = max(0.0, deadline - executor.clock.time())
    return remaining if timeout is None else min(timeout, remaining)


def _failed(
    executor: Executor, history: History, state_name: str, error: str, cause: str
) -> core.Failure:
    history.add("TaskFailed", executor.clock.time(), name=state_name, error=error, cause=cause)
    return core.Failure(error, cause)


def _error_name(error: BaseException) -> str:
    # reflow's own HandlerError carries the handler's exception class name.
    name = getattr(error, "error_type", None)
    return name if isinstance(name, str) else type(error).__name__


def _error_cause(error: BaseException) -> str:
    message = getattr(error, "error_message", None)
    return message if isinstance(message, str) else str(error)
