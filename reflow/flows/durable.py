"""Durable Standard executions: one state transition at a time, each one persisted.

A :class:`DurableRunner` advances an execution from its stored record (see
:mod:`reflow.flows.store`): it rebuilds the value-only cursor, asks the pure
:func:`~reflow.flows.interpreter.step` what to do, does it (a task call, the
branches of a Parallel or Map), and saves the resulting cursor and that
transition's history events in one compare-and-set transaction. Waiting is
never done in memory: a Wait state, a retry back-off, a callback task's
timeout and heartbeat and the execution's ``TimeoutSeconds`` become durable
timers, and the execution is simply not runnable until one fires. So a
process killed at any point loses at most the transition in progress, which
the next worker redoes — with the same task idempotency key. (Pass, Choice,
Succeed and Fail transitions are saved write-behind, see
:mod:`reflow.flows.writebehind`: a crash may lose several of them, none of
which anything outside the record has seen.)

Parallel and Map states run their children within the state's one
transition, each child keeping its own progress in a record of its own (see
:mod:`reflow.flows.iterations`): a crash mid-state resumes every child where
its record stands, so a task whose result was saved does not run again.
The child records are dropped once the transition leaving the state is saved.
A child waiting for a task token or a nested execution parks instead, and
the execution waits for its children (see :mod:`reflow.flows.child_waits`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.clock import Clock
from reflow.errors import ExecutionAlreadyExistsError, ReflowError
from reflow.flows import child_waits, children, iterations, nested
from reflow.flows import interpreter as core
from reflow.flows.branches import replay, run_branches
from reflow.flows.calls import ExecutionTimedOut
from reflow.flows.children import StartChild, StopChild, waited_children
from reflow.flows.errors import HEARTBEAT_TIMEOUT, RUNTIME, TASK_FAILED, TIMEOUT
from reflow.flows.executor import Executor, reads_context
from reflow.flows.history import History, iso_time
from reflow.flows.model import State, StateMachine
from reflow.flows.retry import backoff_delay
from reflow.flows.store import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionRecord,
    ExecutionStore,
    FencedError,
    PreparedSave,
    execution_arn,
    timer_key,
)
from reflow.flows.tasks import TaskFunction, invoke, resolve_function
from reflow.flows.values import json_copy
from reflow.flows.writebehind import PersistHook, SaveQueue

__all__ = [
    "CALLBACK_SUFFIX",
    "DurableRunner",
    "PersistHook",
    "execution_arn",
    "runnable",
    "task_token",
]

CALLBACK_SUFFIX = child_waits.CALLBACK_SUFFIX

_TYPES = ("Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
_ENTERED = {kind: f"{kind}StateEntered" for kind in _TYPES}
_EXITED = {kind: f"{kind}StateExited" for kind in _TYPES}
_ACCOUNT = "arn:aws:states:local:000000000000"
_CALLING = ("Task", "Parallel", "Map")
# States whose transition needs no I/O: run() takes a short path for them.
_PURE = frozenset({"Pass", "Choice", "Succeed", "Fail"})
_YIELD_EVERY = 64


def runnable(record: ExecutionRecord, now: float) -> bool:
    """Whether a worker has something to do for ``record`` at ``now``."""
    if record.status != RUNNING:
        return False
    if record.deadline is not None and now >= record.deadline:
        return True  # it must be timed out
    wait = record.wait
    if wait is None or wait["kind"] == "outcome":
        return True
    if wait["kind"] == "token":
        return not wait.get("sent", True)  # the request to the function may be lost
    if wait["kind"] == "children":
        # Parked children (see child_waits): an answer marks it ready; a nested
        # execution waited for is looked at again at "at" (a fallback).
        return bool(wait.get("ready")) or (wait.get("at") is not None and wait["at"] <= now)
    return bool(wait["kind"] == "timer" and wait["at"] <= now)


def events_of(history: History) -> list[list[Any]]:
    """A transition's events as stored (ids are given when the history is read)."""
    return history.stored()


class DurableRunner:
    """Advances durable executions of the machines in ``machines``."""

    def __init__(
        self,
        store: ExecutionStore,
        machines: Mapping[str, StateMachine],
        *,
        functions: Mapping[str, TaskFunction],
        clock: Clock,
        on_persist: PersistHook | None = None,
        blobs: Blobs | None = None,
    ) -> None:
        self.store = store
        self.machines = machines
        self.blobs = blobs
        # Set by the service: starts a durable child execution (flow, input, name) for
        # a states:startExecution.waitForTaskToken task.
        self.start_child: StartChild | None = None
        # Set by the service: stops a .sync child whose task timed out.
        self.stop_child: StopChild | None = None
        self.functions = functions
        self.clock = clock
        self.on_persist = on_persist

    async def run(
        self, record: ExecutionRecord, version: int
    ) -> tuple[ExecutionRecord, int] | None:
        """Advance until the execution finishes or waits; None when it must be read again.

        Pass, Choice, Succeed and Fail states need no I/O: their transitions
        take a short path (no executor, no context object unless the machine
        reads it) and are saved write-behind (see :mod:`reflow.flows.writebehind`):
        while one save is in flight the next transitions are computed, and
        their saves merged into the one that follows it. Every other
        transition starts only once everything before it is durable, and is
        saved before the next one starts; so is the one that ends the run.
        Raises :class:`~reflow.flows.store.FencedError` as :meth:`advance` does
        (what was computed after the fenced save is dropped).
        """
        saves = SaveQueue(self.store, version, self.on_persist)
        try:
            transitions = 0
            while runnable(record, self.clock.time()):
                prepared = self._pure(record)
                if prepared is not None:
                    saves.add(prepared, record)
                    if record.status == RUNNING:
                        await saves.pace()  # turns the event loop once
                    continue
                # Something outside the record may see what follows: it starts from
                # a durable record, as it would after a crash.
                version = await saves.flush()
                transitions += 1
                if transitions % _YIELD_EVERY == 0:
                    # A backend that answers without suspending (the memory one) would
                    # otherwise hold the loop for a whole run of tasks: a stop could not run.
                    await asyncio.sleep(0)
                advanced = await self.advance(record, version)
                if advanced is None:
                    return None
                record, version = advanced
                saves.version = version
            return record, await saves.flush()
        except BaseException:
            saves.abandon()
            raise

    def _pure(self, record: ExecutionRecord) -> PreparedSave | None:
        """The current transition made in memory and encoded, if its state is entered
        afresh and needs no I/O (see :data:`_PURE`); else None, the record untouched."""
        if record.wait is not None or record.entered or record.status != RUNNING:
            return None
        machine = self.machines.get(record.flow)
        state = machine.states.get(record.state) if machine is not None else None
        if machine is None or state is None or state.type not in _PURE:
            return None
        now = self.clock.time()
        if record.deadline is not None and now >= record.deadline:
            return None  # advance() times it out
        history = History()
        record.entered_at, record.visit = now, record.seq
        history.state(_ENTERED[state.type], now, state.name, "input", record.state_input)
        cursor = core.Cursor(
            record.state, record.state_input, record.variables, tuple(record.attempts)
        )
        context = self._context(record, machine, state) if reads_context(machine) else {}
        action = core.step(machine, cursor, context)
        if not self._conclude(record, state, action, history):
            raise AssertionError(f"a {state.type} state asked for {action!r}")
        record.seq += 1
        # Unencoded: run() hands the record to its SaveQueue, which encodes only the
        # newest of the transitions one write covers.
        return self.store.prepare(record, events_of(history), encode=False)

    def _conclude(
        self, record: ExecutionRecord, state: State, action: core.Action, history: History
    ) -> bool:
        """Apply a Goto, Succeed or Fail to ``record`` (not saved yet); False for others."""
        if isinstance(action, core.Goto):
            history.state(
                _EXITED[state.type], self.clock.time(), state.name, "output", action.cursor.input
            )
            record.state, record.state_input = action.cursor.state, action.cursor.input
            record.variables = dict(action.cursor.variables)
            record.attempts, record.entered = [], False
            return True
        if isinstance(action, core.Succeed):
            end = self.clock.time()
            history.state(_EXITED[state.type], end, state.name, "output", action.output)
            record.output = json_copy(action.output)
            history.add("ExecutionSucceeded", end, output=record.output)
            record.status, record.stop_time, record.wait = SUCCEEDED, end, None
            return True
        if isinstance(action, core.Fail):
            end = self.clock.time()
            record.error, record.cause = action.error, action.cause
            history.add("ExecutionFailed", end, error=action.error, cause=action.cause)
            record.status, record.stop_time, record.wait = FAILED, end, None
            return True
        return False

    async def advance(
        self, record: ExecutionRecord, version: int
    ) -> tuple[ExecutionRecord, int] | None:
        """Make one transition and save it; None when the record must be read again.

        Raises :class:`~reflow.flows.store.FencedError` when the record changed
        under this worker (the transition is then dropped, unsaved).
        """
        scopes: list[iterations.Children] = []
        held = record.wait is not None and record.wait["kind"] == "children"
        advanced = await self._transition(record, version, scopes)
        if advanced is None or any(scope.held for scope in scopes):
            return advanced  # parked children keep their records
        if any(scope.touched for scope in scopes) or (held and record.status != RUNNING):
            # Saved: the state's children are over and their records are garbage now.
            await iterations.forget(self.store.kv, record.name)
        return advanced

    async def _transition(
        self, record: ExecutionRecord, version: int, scopes: list[iterations.Children]
    ) -> tuple[ExecutionRecord, int] | None:
        """:meth:`advance`'s work; appends to ``scopes`` each set of children it ran."""
        machine = self.machines[record.flow]
        now = self.clock.time()
        history = History()
        if record.deadline is not None and now >= record.deadline:
            return await self._time_out(record, version, history)
        if record.state not in machine.states:
            # The flow was redefined since the execution was saved: it cannot go on.
            record.error = RUNTIME
            record.cause = f"state {record.state!r} is no longer in flow {record.flow!r}"
            history.add("ExecutionFailed", now, error=record.error, cause=record.cause)
            return await self._finish(record, version, history, FAILED)
        cursor = core.Cursor(
            record.state, record.state_input, record.variables, tuple(record.attempts)
        )
        state = machine.states[cursor.state]
        wait = record.wait
        if wait is not None and wait["kind"] == "token" and not wait.get("sent", True):
            # Saved as waiting, but the process died before the function got the token.
            executor = Executor(
                machine, functions=self.functions, clock=self.clock, name=record.name,
                machine_name=record.flow, flows=self.machines, blobs=self.blobs,
            )  # fmt: skip
            executor.deadline, executor.visit = record.deadline, record.visit
            context = self._context(record, machine, state)
            await self._send(record.name, wait, cursor, context, executor)
            return None
        outcome: core.Outcome | None = None
        if wait is None and not record.entered:
            record.entered_at, record.visit = now, record.seq
            history.state(_ENTERED[state.type], now, state.name, "input", cursor.input)
        elif wait is not None and wait["kind"] == "outcome":
            if "error" in wait:
                outcome = core.Failure(wait["error"], wait.get("cause") or "")
            else:
                outcome = core.Result(wait.get("result"))
        elif wait is not None and wait.get("then") == "outcome":
            outcome = core.Result(None)  # the Wait state's time is up
        # else: a retry back-off ran out, or a crash came mid-state: enter it again.
        record.wait = None
        executor = Executor(
            machine,
            functions=self.functions,
            clock=self.clock,
            name=record.name,
            machine_name=record.flow,
            flows=self.machines,
            blobs=self.blobs,
        )
        # Pass/Choice/Wait/Succeed/Fail states of a machine that never reads $$ or $states
        # do not need the context object: skip building it (the hot path of Pass chains).
        needs_context = reads_context(machine) or state.type in _CALLING
        context = self._context(record, machine, state) if needs_context else {}
        executor.deadline = record.deadline
        executor.visit = record.visit
        action = core.step(machine, cursor, context, outcome)
        try:
            while True:
                if isinstance(action, core.Retry):
                    delay = backoff_delay(action.retrier, action.attempt)
                    record.attempts = list(action.cursor.attempts)
                    if delay <= 0:
                        cursor = action.cursor
                        if needs_context:
                            context = self._context(record, machine, state)
                        action = core.step(machine, cursor, context)
                        continue
                    at = self.clock.time() + delay
                    record.wait = {"kind": "timer", "at": at, "then": "enter"}
                    record.entered = True
                    timer = timer_key(at, record.name, "wake")
                    return await self._save(record, version, history, [timer])
                if self._conclude(record, state, action, history):
                    return await self._save(record, version, history)
                if isinstance(action, core.Sleep):
                    current = self.clock.time()
                    at = (
                        action.until
                        if action.until is not None
                        else current + (action.seconds or 0)
                    )
                    if at > current:
                        record.wait = {"kind": "timer", "at": at, "then": "outcome"}
                        record.entered = True
                        timer = timer_key(at, record.name, "wake")
                        return await self._save(record, version, history, [timer])
                    outcome = core.Result(None)
                elif isinstance(action, core.Invoke):
                    if self.start_child is not None and children.handles(action.resource):
                        found = await children.durable_child(
                            self.store, self.start_child, self.machines, record, action,
                            history, self.clock.time(), self.stop_child,
                        )  # fmt: skip
                        if isinstance(found, children.Pending):
                            # The child still runs: its end wakes this one; until then a
                            # slow durable timer looks again at `found.at` (a fallback).
                            record.wait = {
                                "kind": "timer", "at": found.at, "then": "enter",
                                "child": found.child,
                            }  # fmt: skip
                            record.entered = True
                            timer = timer_key(found.at, record.name, "wake")
                            return await self._save(record, version, history, [timer])
                        outcome = found
                        action = core.step(machine, cursor, context, outcome)
                        continue
                    if action.resource.endswith(CALLBACK_SUFFIX):
                        await self._await_callback(
                            record, version, history, action, cursor, context, executor
                        )
                        return None
                    outcome = await invoke(executor, action, cursor, context, history)
                    # A fire-and-forget child flow runs in memory within this transition.
                    await nested.settle(executor)
                else:
                    assert isinstance(action, core.Branches)  # Goto/Succeed/Fail concluded above
                    base = {key: value for key, value in context.items() if key != "State"}
                    if not iterations.needed(action):
                        outcome = await run_branches(executor, action, base, history, state.name)
                        action = core.step(machine, cursor, context, outcome)
                        continue
                    scope = iterations.Children(
                        self.store.kv,
                        iterations.scope_key(record.name, record.visit, cursor.retry_count),
                        executor,
                        state.name,
                        self,
                    )
                    scopes.append(scope)
                    inner = History()
                    try:
                        outcome = await iterations.run_parkable(
                            scope,
                            action,
                            run_branches(executor, action, base, inner, state.name, scope),
                        )
                    except iterations.Parked as parked:
                        return await self._park(record, version, history, cursor, parked)
                    replay(history, inner.stored())
                action = core.step(machine, cursor, context, outcome)
        except ExecutionTimedOut:
            return await self._time_out(record, version, history)

    async def _park(
        self,
        record: ExecutionRecord,
        version: int,
        history: History,
        cursor: core.Cursor,
        parked: iterations.Parked,
    ) -> tuple[ExecutionRecord, int]:
        """Save the execution as waiting for its parked children (see child_waits): only
        the state's Entered event goes with it; the children's are in their records."""
        wait: dict[str, Any] = {"kind": "children", "at": parked.at}
        if parked.children:
            wait["children"] = parked.children
        record.wait, record.entered = wait, True
        record.attempts = list(cursor.attempts)
        timers = [timer_key(parked.at, record.name, "wake")] if parked.at is not None else []
        return await self._save(record, version, history, timers)

    # -- the host of parked children (child_waits.Host) ------------------------------

    def calls(self, resource: str) -> bool:
        """Whether a callback task on ``resource`` (suffix removed) calls something."""
        return (
            resource.startswith("arn:aws:states:::lambda:invoke")
            or resource.startswith(nested.START_EXECUTION)
            or bool(resolve_function(resource, self.functions))
        )

    async def deliver(
        self,
        wait: Mapping[str, Any],
        cursor: core.Cursor,
        context: Mapping[str, Any],
        executor: Executor,
    ) -> core.Outcome:
        """Hand a callback task's payload (with its token) to its function; its outcome
        (only a failure counts)."""
        if wait["resource"] == nested.START_EXECUTION:
            return await self._start_child(wait["payload"], wait["token"])
        return await invoke(
            executor,
            core.Invoke(wait["resource"], wait["payload"], wait.get("timeout"), None),
            cursor, context, History(),
        )  # fmt: skip

    # -- callbacks ---------------------------------------------------------------------

    async def _await_callback(
        self,
        record: ExecutionRecord,
        version: int,
        history: History,
        action: core.Invoke,
        cursor: core.Cursor,
        context: Mapping[str, Any],
        executor: Executor,
    ) -> None:
        """Save the token wait, then hand the payload (with its token) to the function."""
        token = str(context["Task"]["Token"])
        now = self.clock.time()
        resource = action.resource[: -len(CALLBACK_SUFFIX)]
        calls = self.calls(resource)
        wait: dict[str, Any] = {
            "kind": "token",
            "token": token,
            "heartbeat": action.heartbeat,
            # Until the function has been handed the token, the wait stays runnable: a
            # crash between the save and the call must not leave it waiting forever.
            "sent": not calls,
            "resource": resource,
            "payload": action.payload,
            "timeout": action.timeout,
        }
        timers = []
        if action.timeout is not None:
            wait["timeout_at"] = now + action.timeout
            timers.append(timer_key(wait["timeout_at"], record.name, "task"))
        if action.heartbeat is not None:
            wait["heartbeat_at"] = now + action.heartbeat
            timers.append(timer_key(wait["heartbeat_at"], record.name, "task"))
        record.wait, record.entered = wait, True
        history.add(
            "TaskScheduled", now, name=cursor.state, resource=action.resource,
            parameters=action.payload,
        )  # fmt: skip
        history.add("TaskStarted", now, name=cursor.state)
        await self._save(record, version, history, timers, [token])
        if calls:
            await self._send(record.name, wait, cursor, context, executor)
        return None

    async def _send(
        self,
        name: str,
        wait: Mapping[str, Any],
        cursor: core.Cursor,
        context: Mapping[str, Any],
        executor: Executor,
    ) -> None:
        """Hand a callback task's payload (with its token) to its function.

        The function's own result is not the task's (that comes with
        send_task_success), but its failure is.
        """
        token = wait["token"]
        outcome = await self.deliver(wait, cursor, context, executor)
        if isinstance(outcome, core.Failure):
            await self.complete_callback(name, token, outcome, "TaskFailed")
            return
        for _ in range(20):
            loaded = await self.store.load(name)
            if loaded is None:
                return
            record, version = loaded
            current = record.wait
            if record.status != RUNNING or current is None or current.get("token") != token:
                return  # answered (or stopped) already
            if current.get("sent", True):
                return
            current["sent"] = True
            try:
                await self._save(record, version, History())
            except FencedError:
                continue
            return

    async def _start_child(self, payload: Any, token: str) -> core.Outcome:
        """Start the durable child a startExecution.waitForTaskToken task names.

        The child's name is the payload's ``Name`` or derived from the token, so
        starting it again after a crash finds the same execution.
        """
        if self.start_child is None:
            return core.Failure(RUNTIME, "nested executions need the flows service")
        if not isinstance(payload, dict) or not isinstance(payload.get("StateMachineArn"), str):
            return core.Failure(TASK_FAILED, "startExecution needs a StateMachineArn string")
        name = payload.get("Name")
        if not isinstance(name, str):
            name = "child-" + hashlib.sha256(token.encode()).hexdigest()[:40]
        child_input = payload.get("Input", {})
        if isinstance(child_input, str):
            try:
                child_input = json.loads(child_input)
            except ValueError as error:
                return core.Failure("InvalidExecutionInput", f"Input is not JSON: {error}")
        flow = nested.flow_name(payload["StateMachineArn"])
        if flow not in self.machines:
            return core.Failure("StateMachineDoesNotExist", f"no flow named {flow!r}")
        try:
            await self.start_child(flow, child_input, name)
        except ExecutionAlreadyExistsError:
            pass  # started before a crash, and finished since: it was sent
        except ReflowError as error:
            return core.Failure(TASK_FAILED, str(error))
        return core.Result(None)

    async def complete_callback(
        self, name: str, token: str, outcome: core.Outcome, event: str
    ) -> bool:
        """Record a callback's answer if the execution still waits for ``token``.

        ``name`` may be a child's record key (a token of a parked child).
        """
        if name.startswith(child_waits.CHILD_PREFIX):
            return await child_waits.answer_child(
                self.store, name, token, outcome, event, self.clock.time()
            )
        for _ in range(20):
            loaded = await self.store.load(name)
            if loaded is None:
                return False
            record, version = loaded
            wait = record.wait
            if record.status != RUNNING or wait is None or wait.get("token") != token:
                return False
            now = self.clock.time()
            history = History()
            if isinstance(outcome, core.Failure):
                record.wait = {"kind": "outcome", "error": outcome.error, "cause": outcome.cause}
                history.add(event, now, name=record.state, error=outcome.error, cause=outcome.cause)
            else:
                record.wait = {"kind": "outcome", "result": outcome.value}
                history.add(event, now, name=record.state, output=outcome.value)
            try:
                await self._save(record, version, history)
            except FencedError:
                continue  # changed meanwhile (a heartbeat, say): read it again
            return True
        return False

    async def expire_callback(self, name: str) -> bool:
        """A callback task's timer fired: fail it if its time or heartbeat ran out."""
        loaded = await self.store.load(name)
        if loaded is None:
            return False
        record, _ = loaded
        wait = record.wait
        machine = self.machines.get(record.flow)
        state = machine.states.get(record.state) if machine is not None else None
        in_children = state is not None and state.type in ("Parallel", "Map")
        if record.status == RUNNING and in_children and (wait is None or wait["kind"] != "token"):
            # A parked child's timer: the redo fails its task if its time ran out
            # (a transition still running is refused its save, and redone).
            return await child_waits.poke(self.store, name)
        if record.status != RUNNING or wait is None or wait["kind"] != "token":
            return False
        now = self.clock.time()
        token = wait["token"]
        if wait.get("timeout_at") is not None and now >= wait["timeout_at"]:
            failure = core.Failure(TIMEOUT, f"Task '{record.state}' ran past its TimeoutSeconds")
        elif wait.get("heartbeat_at") is not None and now >= wait["heartbeat_at"]:
            failure = core.Failure(HEARTBEAT_TIMEOUT, f"Task '{record.state}' sent no heartbeat")
        else:
            return False
        return await self.complete_callback(name, token, failure, "TaskTimedOut")

    # -- saving ------------------------------------------------------------------------

    async def _time_out(
        self, record: ExecutionRecord, version: int, history: History
    ) -> tuple[ExecutionRecord, int]:
        record.error, record.cause = TIMEOUT, "The execution ran past its TimeoutSeconds"
        now = self.clock.time()
        history.add("ExecutionTimedOut", now, error=TIMEOUT, cause=record.cause)
        # .sync children it waited for are stopped by their timers (children.py), written
        # with this save so that a crash right after it cannot leave them running.
        orphans = [timer_key(now, child, "orphan") for child in waited_children(record.wait)]
        return await self._finish(record, version, history, TIMED_OUT, orphans)

    async def _finish(
        self,
        record: ExecutionRecord,
        version: int,
        history: History,
        status: str,
        timers: list[str] | None = None,
    ) -> tuple[ExecutionRecord, int]:
        record.status, record.stop_time, record.wait = status, self.clock.time(), None
        return await self._save(record, version, history, timers)

    async def _save(
        self,
        record: ExecutionRecord,
        version: int,
        history: History,
        timers: list[str] | None = None,
        tokens: list[str] | None = None,
    ) -> tuple[ExecutionRecord, int]:
        record.seq += 1
        hook = self.on_persist
        if hook is not None:
            hook("before", record.name, record.seq)
        new_version = await self.store.save(
            record, version, events_of(history), timers or (), tokens or ()
        )
        if hook is not None:
            hook("after", record.name, record.seq)
        return record, new_version

    # -- the context object ------------------------------------------------------------

    def _context(
        self, record: ExecutionRecord, machine: StateMachine, state: State
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "Execution": {
                "Id": record.id,
                "Input": record.input,
                "Name": record.name,
                "RoleArn": "arn:aws:iam::000000000000:role/reflow",
                "StartTime": iso_time(record.start_time),
                "RedriveCount": record.redrive_count,
            },
            "StateMachine": {
                "Id": f"{_ACCOUNT}:stateMachine:{record.flow}",
                "Name": record.flow,
            },
            "State": {
                "EnteredTime": iso_time(record.entered_at),
                "Name": state.name,
                "RetryCount": sum(record.attempts),
            },
        }
        if state.type == "Task" and str(getattr(state, "resource", "")).endswith(CALLBACK_SUFFIX):
            context["Task"] = {"Token": task_token(record)}
        return context


def task_token(record: ExecutionRecord) -> str:
    """The token of the current callback task: the same on every redo of the transition."""
    seed = f"{record.id}/{record.state}@{record.visit}/{sum(record.attempts)}"
    return hashlib.sha256(seed.encode()).hexdigest()[:40]
