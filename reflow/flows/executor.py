"""The in-memory executor: does what :func:`reflow.flows.interpreter.step` asks.

It calls task functions (sync or async), sleeps on the injected
:class:`~reflow.clock.Clock` for Wait states and retry back-off, runs
Parallel branches and Map iterations concurrently (bounded by
``MaxConcurrency``), enforces the machine's ``TimeoutSeconds`` and records
the history. It is the Express flavour: nothing is persisted, so a crash
loses the execution (durable Standard executions are built on top later).

``functions`` maps a Task's ``Resource`` to a callable ``(input, context)``.
A resource also resolves by function name when written
``reflow:function:NAME`` or ``arn:aws:lambda:REGION:ACCOUNT:function:NAME``;
``arn:aws:states:::lambda:invoke`` takes ``FunctionName`` and ``Payload``
from its arguments and returns ``{"Payload": …, "StatusCode": 200}``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.flows import distributed, nested
from reflow.flows import interpreter as core
from reflow.flows.calls import Beats, HeartbeatTimeout, TaskTimeout, call
from reflow.flows.errors import HEARTBEAT_TIMEOUT, TASK_FAILED, TIMEOUT, StatesError
from reflow.flows.history import History, HistoryEvent, iso_time
from reflow.flows.model import StateMachine
from reflow.flows.retry import backoff_delay

__all__ = ["Execution", "Executor", "TaskContext", "reads_context", "resolve_function"]

TaskFunction = Callable[[Any, "TaskContext"], Any]

_LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
_TYPES = ("Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
_ENTERED = {kind: f"{kind}StateEntered" for kind in _TYPES}
_EXITED = {kind: f"{kind}StateExited" for kind in _TYPES}
_FINAL = (core.Goto, core.Succeed, core.Fail)
_CONTEXT_READERS: dict[int, tuple[StateMachine, bool]] = {}
_YIELD_EVERY = 64
_SUCCEEDED, _FAILED, _TIMED_OUT = "SUCCEEDED", "FAILED", "TIMED_OUT"


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


@dataclass
class Execution:
    """One run of a state machine: its status, output or error, and history."""

    name: str
    id: str
    input: Any
    status: str = "RUNNING"
    output: Any = None
    error: str | None = None
    cause: str | None = None
    start_time: float = 0.0
    stop_time: float | None = None
    _history: History = field(default_factory=History, repr=False)

    @property
    def history(self) -> tuple[HistoryEvent, ...]:
        """The events so far, oldest first, with Step Functions' type names."""
        return self._history.events

    def event_types(self) -> list[str]:
        """The type of every history event, in order."""
        return self._history.types()


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


class _TimedOut(Exception):
    """The execution's TimeoutSeconds passed."""


class Executor:
    """Runs one execution of ``machine`` in memory."""

    def __init__(
        self,
        machine: StateMachine,
        *,
        functions: Mapping[str, TaskFunction] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
        machine_name: str = "flow",
        flows: Mapping[str, StateMachine] | None = None,
        blobs: Blobs | None = None,
    ) -> None:
        self.machine = machine
        self.functions = dict(functions or {})
        # Flows a Task may start (states:startExecution) by name, and the Blobs a
        # Distributed Map reads items from and writes results to.
        self.flows: Mapping[str, StateMachine] = flows or {}
        self.blobs = blobs
        # Fire-and-forget child executions still running: run() awaits them at the end.
        self.spawned: set[asyncio.Task[Any]] = set()
        self.clock = clock or SYSTEM_CLOCK
        self.name = name or str(uuid.uuid4())
        self.machine_name = machine_name
        self.execution_id = (
            f"arn:aws:states:local:000000000000:execution:{machine_name}:{self.name}"
        )
        self._deadline: float | None = None
        # Set by the durable runner before each task: see TaskContext.visit.
        self.visit: int | None = None

    async def run(self, input: Any) -> Execution:
        """Run to the end and return the finished :class:`Execution`."""
        now = self.clock.time()
        execution = Execution(self.name, self.execution_id, input, start_time=now)
        history = execution._history
        # The caller keeps its own objects; the execution works on a copy of the input.
        input = json_copy(input)
        history.add("ExecutionStarted", now, input=input)
        if self.machine.timeout_seconds is not None:
            self._deadline = now + self.machine.timeout_seconds
        base = {
            "Execution": {
                "Id": self.execution_id,
                "Input": input,
                "Name": self.name,
                "RoleArn": "arn:aws:iam::000000000000:role/reflow",
                "StartTime": iso_time(now),
                "RedriveCount": 0,
            },
            "StateMachine": {
                "Id": f"arn:aws:states:local:000000000000:stateMachine:{self.machine_name}",
                "Name": self.machine_name,
            },
        }
        try:
            end = await self._run_machine(self.machine, input, {}, base, history)
        except _TimedOut:
            execution.status, execution.error = _TIMED_OUT, TIMEOUT
            execution.cause = "The execution ran past its TimeoutSeconds"
            history.add("ExecutionTimedOut", self.clock.time(), error=TIMEOUT)
        else:
            if isinstance(end, core.Succeed):
                execution.status, execution.output = _SUCCEEDED, json_copy(end.output)
                history.add("ExecutionSucceeded", self.clock.time(), output=execution.output)
            else:
                execution.status, execution.error, execution.cause = _FAILED, end.error, end.cause
                history.add("ExecutionFailed", self.clock.time(), error=end.error, cause=end.cause)
        execution.stop_time = self.clock.time()
        await nested.settle(self)
        return execution

    # -- one machine (the execution, a branch, an iteration) --------------------------

    async def _run_machine(
        self,
        machine: StateMachine,
        input: Any,
        variables: Mapping[str, Any],
        base: Mapping[str, Any],
        history: History,
    ) -> core.Succeed | core.Fail:
        cursor = core.start(machine, input, variables)
        # Locals for the per-transition loop: this is the hot path of every execution.
        now, add, step, states = self.clock.time, history.state, core.step, machine.states
        reads_context = self._machine_reads_context(machine)
        transitions = 0
        while True:
            transitions += 1
            if transitions % _YIELD_EVERY == 0:
                # Pass and Choice states never await: give the loop a turn now and then so
                # other executions run and a looping machine can still be cancelled.
                await asyncio.sleep(0)
            if self._deadline is not None:
                self._check_deadline()
            state = states[cursor.state]
            entered = now()
            add(_ENTERED[state.type], entered, state.name, "input", cursor.input)
            if reads_context or state.type == "Task":
                context: Mapping[str, Any] = {
                    **base,
                    "State": {
                        "EnteredTime": iso_time(entered),
                        "Name": state.name,
                        "RetryCount": 0,
                    },
                }
            else:
                # Nothing in this machine can read $$ (and no task sees it): skip building it.
                context = base
            action = step(machine, cursor, context)
            while not isinstance(action, _FINAL):
                if isinstance(action, core.Retry):
                    await self._delay(backoff_delay(action.retrier, action.attempt))
                    cursor = action.cursor
                    context = {
                        **context,
                        "State": {**context.get("State", {}), "RetryCount": cursor.retry_count},
                    }
                    action = core.step(machine, cursor, context)
                    continue
                outcome: core.Outcome
                if isinstance(action, core.Invoke):
                    outcome = await self._invoke(action, cursor, context, history)
                elif isinstance(action, core.Sleep):
                    await self._sleep(action)
                    outcome = core.Result(None)
                else:
                    outcome = await self._branches(action, base, history, state.name)
                action = core.step(machine, cursor, context, outcome)
            if isinstance(action, core.Fail):
                return action
            output = action.cursor.input if isinstance(action, core.Goto) else action.output
            add(_EXITED[state.type], now(), state.name, "output", output)
            if isinstance(action, core.Succeed):
                return action
            cursor = action.cursor

    def _machine_reads_context(self, machine: StateMachine) -> bool:
        """Whether any state of ``machine`` may read the context object (``$$``, ``$states``)."""
        return reads_context(machine)

    # -- the actions -------------------------------------------------------------------

    def _check_deadline(self) -> None:
        if self._deadline is not None and self.clock.time() >= self._deadline:
            raise _TimedOut()

    async def _delay(self, seconds: float) -> None:
        if self._deadline is not None and self.clock.time() + seconds >= self._deadline:
            await self.clock.sleep(max(0.0, self._deadline - self.clock.time()))
            raise _TimedOut()
        await self.clock.sleep(seconds)

    async def _sleep(self, action: core.Sleep) -> None:
        if action.until is not None:
            await self._delay(max(0.0, action.until - self.clock.time()))
        else:
            await self._delay(action.seconds or 0.0)

    async def _invoke(
        self,
        action: core.Invoke,
        cursor: core.Cursor,
        context: Mapping[str, Any],
        history: History,
    ) -> core.Outcome:
        state_name = cursor.state
        now = self.clock.time()
        history.add(
            "TaskScheduled",
            now,
            name=state_name,
            resource=action.resource,
            parameters=action.payload,
        )
        payload, wrap = action.payload, False
        resource = action.resource
        if resource.startswith(_LAMBDA_INVOKE):
            if not isinstance(payload, dict) or "FunctionName" not in payload:
                return self._task_failed(
                    history, state_name, TASK_FAILED, "lambda:invoke needs a FunctionName"
                )
            resource, payload, wrap = str(payload["FunctionName"]), payload.get("Payload"), True
        if resource.startswith(nested.START_EXECUTION):
            limit = action.timeout
            if self._deadline is not None:
                remaining = max(0.0, self._deadline - self.clock.time())
                limit = remaining if limit is None else min(limit, remaining)
            try:
                # TimeoutSeconds bounds a .sync wait like any task call.
                result = await call(
                    lambda: nested.start_execution(self, resource, payload),
                    self.clock,
                    limit=limit,
                    heartbeat=None,
                    beats=Beats(self.clock),
                    check=self._check_deadline,
                )
            except _TimedOut:
                raise
            except TaskTimeout:
                history.add("TaskTimedOut", self.clock.time(), name=state_name, error=TIMEOUT)
                return core.Failure(TIMEOUT, f"Task '{state_name}' ran past its TimeoutSeconds")
            except StatesError as error:
                return self._task_failed(history, state_name, error.name, error.cause)
            history.add("TaskSucceeded", self.clock.time(), name=state_name, output=result)
            return core.Result(result)
        found = resolve_function(resource, self.functions)
        if found is None:
            return self._task_failed(
                history, state_name, TASK_FAILED, f"no function for resource {resource!r}"
            )
        _, function = found
        beats = Beats(self.clock)
        task_context = TaskContext(
            self.name, self.execution_id, state_name, cursor.retry_count, context, self.visit, beats
        )
        history.add("TaskStarted", self.clock.time(), name=state_name)
        try:
            result = await self._call(function, payload, task_context, action, beats)
        except _TimedOut:
            raise  # the whole execution ran out of time: not the task's error
        except TaskTimeout:
            history.add("TaskTimedOut", self.clock.time(), name=state_name, error=TIMEOUT)
            return core.Failure(TIMEOUT, f"Task '{state_name}' ran past its TimeoutSeconds")
        except HeartbeatTimeout:
            history.add("TaskTimedOut", self.clock.time(), name=state_name, error=HEARTBEAT_TIMEOUT)
            return core.Failure(
                HEARTBEAT_TIMEOUT,
                f"Task '{state_name}' sent no heartbeat for {action.heartbeat} seconds",
            )
        except StatesError as error:
            return self._task_failed(history, state_name, error.name, error.cause)
        except Exception as error:  # a task's own exception becomes its ASL error
            return self._task_failed(history, state_name, _error_name(error), _error_cause(error))
        try:
            # A copy through JSON: the result must be JSON, and later states must not
            # share objects the function may still hold.
            result = json.loads(json.dumps(result))
        except (TypeError, ValueError) as error:
            return self._task_failed(
                history, state_name, TASK_FAILED, f"the result is not JSON: {error}"
            )
        if wrap:
            result = {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}
        history.add("TaskSucceeded", self.clock.time(), name=state_name, output=result)
        return core.Result(result)

    def _task_failed(
        self, history: History, state_name: str, error: str, cause: str
    ) -> core.Failure:
        history.add("TaskFailed", self.clock.time(), name=state_name, error=error, cause=cause)
        return core.Failure(error, cause)

    async def _call(
        self,
        function: TaskFunction,
        payload: Any,
        context: TaskContext,
        action: core.Invoke,
        beats: Beats,
    ) -> Any:
        limit = action.timeout
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - self.clock.time())
            limit = remaining if limit is None else min(limit, remaining)
        return await call(
            lambda: function(json_copy(payload), context),
            self.clock,
            limit=limit,
            heartbeat=action.heartbeat,
            beats=beats,
            check=self._check_deadline,
        )

    async def _child(
        self, child: core.Child, base: Mapping[str, Any], history: History, state_name: str
    ) -> core.Outcome:
        """Run one branch or iteration to its end, recording Map iteration events."""
        if child.index is not None:
            history.add(
                "MapIterationStarted", self.clock.time(), name=state_name, index=child.index
            )
        end = await self._run_machine(child.machine, child.input, child.variables, base, history)
        if isinstance(end, core.Succeed):
            if child.index is not None:
                history.add(
                    "MapIterationSucceeded", self.clock.time(), name=state_name, index=child.index
                )
            return core.Result(end.output)
        if child.index is not None:
            history.add(
                "MapIterationFailed",
                self.clock.time(),
                name=state_name,
                index=child.index,
                error=end.error,
                cause=end.cause,
            )
        return core.Failure(end.error, end.cause)

    async def _branches(
        self, action: core.Branches, base: Mapping[str, Any], history: History, state_name: str
    ) -> core.Outcome:
        if action.distributed is not None:
            return await distributed.run_map_run(self, action, history, state_name)
        kind = action.kind
        history.add(
            f"{kind}StateStarted", self.clock.time(), name=state_name, length=len(action.children)
        )
        gate = asyncio.Semaphore(action.max_concurrency) if action.max_concurrency else None
        fail_fast = action.tolerated_count is None and action.tolerated_percentage is None

        async def one(child: core.Child) -> core.Outcome:
            if gate is None:
                outcome = await self._child(child, base, history, state_name)
            else:
                async with gate:
                    outcome = await self._child(child, base, history, state_name)
            if fail_fast and isinstance(outcome, core.Failure):
                # Raising wakes asyncio.wait at once, so the other children are stopped.
                raise _ChildFailed(outcome)
            return outcome

        tasks = [asyncio.ensure_future(one(child)) for child in action.children]
        outcome: core.Outcome | None = None
        try:
            if tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = task.exception() if not task.cancelled() else None
            if isinstance(error, _ChildFailed):
                outcome = error.outcome
                break
            if error is not None:
                raise error
        if outcome is None:
            outcome = core.gather(action, [task.result() for task in tasks])
        if isinstance(outcome, core.Result):
            history.add(f"{kind}StateSucceeded", self.clock.time(), name=state_name)
        else:
            history.add(
                f"{kind}StateFailed",
                self.clock.time(),
                name=state_name,
                error=outcome.error,
                cause=outcome.cause,
            )
        return outcome


class _ChildFailed(Exception):
    """A branch or iteration failed and the state fails fast."""

    def __init__(self, outcome: core.Failure) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): much cheaper than deepcopy."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    if isinstance(value, tuple):
        return [json_copy(item) for item in value]
    return value


def _error_name(error: BaseException) -> str:
    # reflow's own HandlerError carries the handler's exception class name.
    name = getattr(error, "error_type", None)
    return name if isinstance(name, str) else type(error).__name__


def _error_cause(error: BaseException) -> str:
    message = getattr(error, "error_message", None)
    return message if isinstance(message, str) else str(error)


def reads_context(machine: StateMachine) -> bool:
    """Whether any state of ``machine`` may read the context object (``$$``, ``$states``)."""
    entry = _CONTEXT_READERS.get(id(machine))
    if entry is None or entry[0] is not machine:
        text = json.dumps(machine.definition)
        entry = (machine, "$$" in text or "$states" in text)
        if len(_CONTEXT_READERS) >= 1024:
            _CONTEXT_READERS.clear()
        # The machine is kept with its answer, so its id cannot be reused meanwhile.
        _CONTEXT_READERS[id(machine)] = entry
    return entry[1]
