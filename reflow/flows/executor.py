"""The in-memory executor: does what :func:`reflow.flows.interpreter.step` asks.

It runs one execution's transitions in a loop, sleeps on the injected
:class:`~reflow.clock.Clock` for Wait states and retry back-off, enforces the
machine's ``TimeoutSeconds`` and records the history. Task calls live in
:mod:`reflow.flows.tasks`, Parallel branches and Map iterations in
:mod:`reflow.flows.branches`. It is the Express flavour: nothing is persisted,
so a crash loses the execution (durable Standard executions,
:mod:`reflow.flows.durable`, drive it one transition at a time).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.flows import interpreter as core
from reflow.flows import nested
from reflow.flows.branches import run_branches
from reflow.flows.calls import ExecutionTimedOut
from reflow.flows.errors import TIMEOUT
from reflow.flows.history import History, HistoryEvent, iso_time
from reflow.flows.integrations import fixed_clients, integration_functions
from reflow.flows.model import StateMachine
from reflow.flows.retry import backoff_delay
from reflow.flows.tasks import TaskFunction, invoke
from reflow.flows.values import json_copy

__all__ = ["Execution", "Executor", "reads_context"]

_TYPES = ("Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
_ENTERED = {kind: f"{kind}StateEntered" for kind in _TYPES}
_EXITED = {kind: f"{kind}StateExited" for kind in _TYPES}
_FINAL = (core.Goto, core.Succeed, core.Fail)
_CONTEXT_READERS: dict[int, tuple[StateMachine, bool]] = {}
_YIELD_EVERY = 64
_SUCCEEDED, _FAILED, _TIMED_OUT = "SUCCEEDED", "FAILED", "TIMED_OUT"


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


class Executor:
    """Runs one execution of ``machine`` in memory.

    ``events``, ``tables`` and ``cache`` are the clients the integrations of
    :mod:`reflow.flows.integrations` use (``events:putEvents``,
    ``dynamodb:*``, ``cache:purge`` and CloudFront's ``createInvalidation``).
    """

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
        events: Any = None,
        tables: Mapping[str, Any] | None = None,
        cache: Any = None,
    ) -> None:
        self.machine = machine
        self.functions = dict(functions or {})
        if events is not None or tables is not None or cache is not None:
            # The integrations are task functions keyed by resource ARN; the caller's
            # own functions win, so a test may stand in for one.
            source = fixed_clients(events=events, tables=tables, cache=cache)
            self.functions = {**integration_functions(source), **self.functions}
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
        # When the execution's TimeoutSeconds runs out (epoch seconds on the clock).
        self.deadline: float | None = None
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
            self.deadline = now + self.machine.timeout_seconds
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
            end = await self.run_machine(self.machine, input, {}, base, history)
        except ExecutionTimedOut:
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

    async def run_machine(
        self,
        machine: StateMachine,
        input: Any,
        variables: Mapping[str, Any],
        base: Mapping[str, Any],
        history: History,
    ) -> core.Succeed | core.Fail:
        """Run ``machine`` (the execution's, a branch's, an iteration's) from its start."""
        cursor = core.start(machine, input, variables)
        # Locals for the per-transition loop: this is the hot path of every execution.
        now, add, step, states = self.clock.time, history.state, core.step, machine.states
        context_read = reads_context(machine)
        transitions = 0
        while True:
            transitions += 1
            if transitions % _YIELD_EVERY == 0:
                # Pass and Choice states never await: give the loop a turn now and then so
                # other executions run and a looping machine can still be cancelled.
                await asyncio.sleep(0)
            if self.deadline is not None:
                self.check_deadline()
            state = states[cursor.state]
            entered = now()
            add(_ENTERED[state.type], entered, state.name, "input", cursor.input)
            if context_read or state.type == "Task":
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
                    outcome = await invoke(self, action, cursor, context, history)
                elif isinstance(action, core.Sleep):
                    await self._sleep(action)
                    outcome = core.Result(None)
                else:
                    outcome = await run_branches(self, action, base, history, state.name)
                action = core.step(machine, cursor, context, outcome)
            if isinstance(action, core.Fail):
                return action
            output = action.cursor.input if isinstance(action, core.Goto) else action.output
            add(_EXITED[state.type], now(), state.name, "output", output)
            if isinstance(action, core.Succeed):
                return action
            cursor = action.cursor

    # -- the actions -------------------------------------------------------------------

    def check_deadline(self) -> None:
        """Raise :class:`~reflow.flows.calls.ExecutionTimedOut` once the deadline passed."""
        if self.deadline is not None and self.clock.time() >= self.deadline:
            raise ExecutionTimedOut()

    async def _delay(self, seconds: float) -> None:
        if self.deadline is not None and self.clock.time() + seconds >= self.deadline:
            await self.clock.sleep(max(0.0, self.deadline - self.clock.time()))
            raise ExecutionTimedOut()
        await self.clock.sleep(seconds)

    async def _sleep(self, action: core.Sleep) -> None:
        if action.until is not None:
            await self._delay(max(0.0, action.until - self.clock.time()))
        else:
            await self._delay(action.seconds or 0.0)


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
