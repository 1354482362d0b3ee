"""The flows service: durable Standard executions shared by any number of workers.

:class:`FlowService` is the API (start, describe, list, history, stop,
redrive, the task-token callbacks) and the machinery behind it:

* a **work queue** — the backend ``Log`` stream ``flows.work``, one entry per
  "this execution has something to do". Worker tasks in every process
  running the service read it through one consumer group, so they share the
  load; an entry whose worker died unacknowledged is redelivered after its
  lease. Duplicate entries are harmless: a worker only acts on a runnable
  record, and every save is a compare-and-set.
* **durable timers** — keys in ``KV`` sorted by due time (see
  :mod:`reflow.flows.store`), polled on the injected ``Clock``; a due timer
  puts its execution back on the queue (or fails a callback task whose
  timeout or heartbeat ran out). Between polls the timer loop sleeps only
  until the earliest timer it knows of — the next one its last look saw,
  or one this process has stored since (the store tells it of each write;
  an earlier one cuts the sleep short) — so a parked Wait ends on time in
  the process that parked it; ``poll`` bounds the wait for timers that
  other processes write.
* **recovery** — on start, every RUNNING execution of a flow this service
  has, with work to do, is queued again, so a restarted server resumes at once
  rather than after a lease.
* **hand-offs** — in a rolling deploy, processes running different versions
  of the app share the queue. A worker that takes an entry for an execution
  of a flow its app does not have passes it on: it appends the name to that
  flow's own stream ``flows.handoff.FLOW`` and acknowledges the shared entry.
  Only services that have the flow read that stream (every ``poll``), so the
  entry reaches one of them without a restart, and the service without the
  flow never sees it again (no spinning). A service that takes a hand-off and
  dies leaves it to its lease, like any queue entry. :attr:`FlowService.passed_on`
  counts, per flow, what this service passed on.
* **waking parents** — an execution started by a ``startExecution.sync`` task
  names its parent; when it ends, the parent is queued at once (and its
  final save carries a due timer for the parent, should this process die
  first). A parent waiting for a child that has ended is runnable even
  though its fallback timer is not due yet.
* **retention** — acknowledging an entry leaves it in the stream, so about
  once a minute (on the timer loop) the service trims ``flows.work`` and the
  hand-off streams of its flows up to what is provably acknowledged, keeping
  ``keep_acked`` seconds more (see :mod:`reflow.backends.retention`). A
  pending or undelivered entry is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from reflow.backends import Backend
from reflow.backends.retention import AckedTrimmer
from reflow.errors import ExecutionAlreadyExistsError, ExecutionNotFoundError
from reflow.flows import child_waits, children, iterations
from reflow.flows import interpreter as core
from reflow.flows.durable import DurableRunner, PersistHook, events_of, execution_arn, runnable
from reflow.flows.express import ExpressRuns
from reflow.flows.history import History
from reflow.flows.model import StateMachine
from reflow.flows.parse import parse
from reflow.flows.store import (
    ABORTED,
    FAILED,
    RUNNING,
    STATUSES,
    TIMED_OUT,
    ExecutionRecord,
    ExecutionStore,
    FencedError,
    InvalidExecutionRequestError,
    check_name,
    timer_key,
)
from reflow.flows.tasks import TaskFunction
from reflow.flows.values import json_copy

__all__ = ["HANDOFF_PREFIX", "FlowService", "WORK_STREAM", "handoff_stream"]

WORK_STREAM = "flows.work"
HANDOFF_PREFIX = "flows.handoff."
_GROUP = "flow-workers"
_log = logging.getLogger("reflow.flows")


def handoff_stream(flow: str) -> str:
    """The stream on which executions of ``flow`` are passed to services that have it."""
    return HANDOFF_PREFIX + flow


class FlowService:
    """Durable executions of ``flows`` (name → definition) over ``backend``.

    ``functions`` maps Task resources to callables ``(input, context)``;
    ``workers`` is how many executions this process advances at once;
    ``lease`` how long a worker holds a queue entry before another may take
    it; ``poll`` how often timers are checked (seconds on ``clock``).
    ``on_persist`` is called around every save (tests use it to crash).
    Flows named in ``express`` run in memory instead (see
    :mod:`reflow.flows.express`). ``passed_on`` counts, per flow, the queue
    entries this service handed to services that have the flow (see the
    module's "hand-offs"). Acknowledged queue entries are trimmed every
    ``trim_every`` seconds once ``keep_acked`` seconds older than the oldest
    entry still needed (see the module's "retention").
    """

    def __init__(
        self,
        backend: Backend,
        flows: Mapping[str, StateMachine | Mapping[str, Any] | str],
        *,
        functions: Mapping[str, TaskFunction] | None = None,
        workers: int = 4,
        lease: float = 60.0,
        poll: float = 0.25,
        block: float = 0.5,
        on_persist: PersistHook | None = None,
        express: Collection[str] = (),
        keep_acked: float = 600.0,
        trim_every: float = 60.0,
    ) -> None:
        self.backend = backend
        self.clock = backend.clock
        self.machines = {
            name: flow if isinstance(flow, StateMachine) else parse(flow)
            for name, flow in flows.items()
        }
        self.store = ExecutionStore(backend.kv)
        self.runner = DurableRunner(
            self.store,
            self.machines,
            functions=dict(functions or {}),
            clock=self.clock,
            on_persist=on_persist,
            blobs=backend.blobs,
        )
        self.workers = workers
        self.lease = lease
        self.poll = poll
        self.block = block
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.passed_on: Counter[str] = Counter()
        self.express_flows = frozenset(express)
        self.express = ExpressRuns(self.clock, flows=self.machines, blobs=backend.blobs)
        self.runner.start_child = self._start_child
        self.runner.stop_child = self._stop_child
        self.trimmer = AckedTrimmer(backend.log, self.clock, keep=keep_acked, every=trim_every)
        # The timer loop's sleep (see the module's "durable timers"): the earliest due
        # time this process stored since the loop last looked, when it means to wake,
        # and what cuts its sleep short.
        self._noted: float | None = None
        self._wake_at = math.inf
        self._timer_added = asyncio.Event()
        self._seen_next: float | None = None
        self.store.on_timer = self._timer_stored

    @property
    def functions(self) -> dict[str, TaskFunction]:
        """The task functions (mutable until executions run)."""
        return dict(self.runner.functions)

    def set_functions(self, functions: Mapping[str, TaskFunction]) -> None:
        """Replace the task functions (the platform wires the app's after start)."""
        self.runner.functions = dict(functions)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Queue recovered work, then start the workers and the timer loop."""
        await self.backend.log.create_group(WORK_STREAM, _GROUP, start="0")
        await self.recover()
        self._tasks = [
            asyncio.create_task(
                self._work(f"{self._consumer}-{index}"), name=f"flow-worker-{index}"
            )
            for index in range(self.workers)
        ]
        self._tasks.append(asyncio.create_task(self._timers(), name="flow-timers"))
        self._tasks.append(
            asyncio.create_task(self._handoffs(f"{self._consumer}-h"), name="flow-handoffs")
        )

    async def stop(self) -> None:
        """Stop the workers (an execution mid-transition is redone by the next worker)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        while tasks:
            # A client library may swallow one cancellation (turning it into its own
            # error, which the loops survive); the flag and repeated cancels end them.
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)
        self._stopping = False
        await self.express.stop()

    async def __aenter__(self) -> FlowService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def recover(self) -> int:
        """Queue every RUNNING execution that has work to do now; return how many.

        Only executions of flows this service has: the others are recovered by
        the services (other versions of the app) that have their flows.
        """
        queued, after, now = 0, None, self.clock.time()
        while True:
            records = await self.store.records(start_after=after, limit=500)
            for record in records:
                if record.flow in self.machines and runnable(record, now):
                    await self._enqueue(record.name)
                    queued += 1
            if len(records) < 500:
                return queued
            after = records[-1].name

    # -- the API -----------------------------------------------------------------------

    async def start_execution(
        self, flow: str, input: Any = None, *, name: str | None = None
    ) -> dict[str, Any]:
        """Start ``flow`` on ``input``; return the execution's description.

        Starting again with the name of a RUNNING execution of the same flow and
        input returns that execution (idempotent); any other reuse of a name
        raises :class:`~reflow.errors.ExecutionAlreadyExistsError`.
        """
        machine = self.machines.get(flow)
        if machine is None:
            raise InvalidExecutionRequestError("flow", f"no flow named {flow!r}")
        name = check_name(name or str(uuid.uuid4()))
        input = {} if input is None else input
        try:
            input = json.loads(json.dumps(input))
        except (TypeError, ValueError) as error:
            raise InvalidExecutionRequestError("input", f"is not JSON: {error}") from None
        if flow in self.express_flows:
            return self.express.start(flow, machine, input, name, self.runner.functions)
        return await self._create(flow, machine, input, name, None)

    async def _create(
        self, flow: str, machine: StateMachine, input: Any, name: str, parent: str | None
    ) -> dict[str, Any]:
        """Store and queue a new Standard execution (``parent``: who waits for it)."""
        now = self.clock.time()
        deadline = now + machine.timeout_seconds if machine.timeout_seconds is not None else None
        record = ExecutionRecord(
            name=name,
            flow=flow,
            id=execution_arn(flow, name),
            input=input,
            state=machine.start_at,
            state_input=json_copy(input),
            start_time=now,
            entered_at=now,
            deadline=deadline,
            parent=parent,
        )
        history = History()
        history.add("ExecutionStarted", now, input=input, stateMachine=flow)
        timers = [timer_key(deadline, name, "deadline")] if deadline is not None else []
        if await self.store.create(record, events_of(history), timers):
            await self._enqueue(name)
            return record.describe()
        existing = await self._load(name)
        if existing.flow == flow and existing.input == input and existing.status == RUNNING:
            return existing.describe()
        raise ExecutionAlreadyExistsError(name)

    async def describe(self, name: str) -> dict[str, Any]:
        """Status, input, output or error, and where a running execution stands."""
        run = self.express.get(name)
        if run is not None:
            return run.describe()
        return (await self._load(name)).describe()

    async def flow_of(self, name: str) -> str | None:
        """The flow execution ``name`` runs, as stored; None when there is no such execution."""
        run = self.express.get(name)
        if run is not None:
            return run.flow
        loaded = await self.store.load(check_name(name))
        return None if loaded is None else loaded[0].flow

    async def list_executions(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Executions in name order, optionally of one flow and/or in one status."""
        if status is not None and status not in STATUSES:
            raise InvalidExecutionRequestError("status", f"{status!r} is not one of {STATUSES}")
        rows: list[dict[str, Any]] = []
        after: str | None = None
        while len(rows) < limit:
            records = await self.store.records(start_after=after, limit=500)
            for record in records:
                if (flow is None or record.flow == flow) and (
                    status is None or record.status == status
                ):
                    rows.append(record.summary())
            if len(records) < 500:
                break
            after = records[-1].name
        rows.extend(
            row
            for row in self.express.summaries()
            if (flow is None or row["flow"] == flow) and (status is None or row["status"] == status)
        )
        rows.sort(key=lambda row: str(row["name"]))
        return rows[:limit]

    async def history(self, name: str) -> list[dict[str, Any]]:
        """The execution's events with Step Functions' type names, oldest first."""
        run = self.express.get(name)
        if run is not None:
            return run.history()  # an Express execution's, once it has finished
        await self._load(name)
        return await self.store.history(name)

    async def stop_execution(
        self, name: str, *, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        """Abort a RUNNING execution (status ABORTED, an ExecutionAborted event)."""
        self._not_express(name, "stopped")

        orphans: list[str] = []

        def abort(record: ExecutionRecord, history: History) -> list[str]:
            if record.status != RUNNING:
                raise InvalidExecutionRequestError("name", f"execution {name!r} is {record.status}")
            now = self.clock.time()
            # The .sync children it waits for are stopped too: their timers go with this
            # save, so a crash before they are stopped below still stops them.
            orphans[:] = children.waited_children(record.wait)
            record.status, record.stop_time, record.wait = ABORTED, now, None
            record.error, record.cause = error, cause
            history.add("ExecutionAborted", now, error=error, cause=cause)
            return [timer_key(now, child, "orphan") for child in orphans]

        record = await self._update(name, abort)
        if record.parent is not None:
            await self._enqueue(record.parent)  # it waits for this one: wake it now
        for child in orphans:
            await self._stop_orphan(child)
        # A Map or Parallel state it stood in will not save again: drop its children.
        await iterations.forget(self.backend.kv, name)
        return record.describe()

    async def _stop_child(self, name: str, cause: str) -> None:
        """Abort child execution ``name`` with ``cause`` if it still runs."""
        # Gone, or ended meanwhile: nothing to stop.
        with contextlib.suppress(ExecutionNotFoundError, InvalidExecutionRequestError):
            await self.stop_execution(name, cause=cause)

    async def _stop_orphan(self, name: str) -> None:
        """Stop ``.sync`` child ``name`` if it runs on while its parent has ended."""
        loaded = await self.store.load(name)
        child = loaded[0] if loaded is not None else None
        if child is None or child.status != RUNNING or child.parent is None:
            return
        parent = await self.store.load(child.parent)
        if parent is not None and parent[0].status == RUNNING:
            return  # redriven meanwhile, say: it is no orphan
        if parent is None:
            cause = f"Stopped: execution {child.parent}, which started it, is gone"
        else:
            cause = children.orphan_cause(parent[0])
        await self._stop_child(name, cause)

    async def redrive(self, name: str) -> dict[str, Any]:
        """Run a FAILED, TIMED_OUT or ABORTED execution again from the state it stopped in."""
        self._not_express(name, "redriven")

        def again(record: ExecutionRecord, history: History) -> None:
            if record.status not in (FAILED, TIMED_OUT, ABORTED):
                raise InvalidExecutionRequestError(
                    "name", f"execution {name!r} is {record.status}; only a failed one redrives"
                )
            machine = self.machines.get(record.flow)
            if machine is None:
                # Another version of the app's flow (a rolling deploy): ask a service with it.
                raise InvalidExecutionRequestError(
                    "name", f"this service has no flow {record.flow!r} to redrive {name!r} with"
                )
            now = self.clock.time()
            record.status, record.stop_time, record.wait = RUNNING, None, None
            record.error = record.cause = None
            record.attempts, record.entered = [], False
            record.redrive_count += 1
            if machine.timeout_seconds is not None:
                record.deadline = now + machine.timeout_seconds
            history.add("ExecutionRedriven", now, redriveCount=record.redrive_count)

        record = await self._update(name, again)
        if record.deadline is not None:
            # The new deadline needs its timer (an older, stale one is harmless).
            await self.store.put_timer(timer_key(record.deadline, name, "deadline"))
        await self._enqueue(name)
        return record.describe()

    async def _start_child(
        self, flow: str, input: Any, name: str, parent: str | None = None
    ) -> None:
        """Start a child execution for a startExecution task (``parent`` waits for it)."""
        if parent is None or flow in self.express_flows:
            await self.start_execution(flow, input, name=name)
            return
        # A .sync child: stored with its parent's name, so its end wakes the parent.
        input = json.loads(json.dumps({} if input is None else input))
        await self._create(flow, self.machines[flow], input, check_name(name), parent)

    async def send_task_success(self, token: str, output: Any) -> None:
        """A callback task succeeded with ``output``."""
        try:
            output = json.loads(json.dumps(output))
        except (TypeError, ValueError) as error:
            raise InvalidExecutionRequestError("output", f"is not JSON: {error}") from None
        await self._answer(token, core.Result(output), "TaskSucceeded")

    async def send_task_failure(
        self, token: str, *, error: str | None = None, cause: str | None = None
    ) -> None:
        """A callback task failed with ``error`` and ``cause``."""
        failure = core.Failure(error or "States.TaskFailed", cause or "")
        await self._answer(token, failure, "TaskFailed")

    async def send_task_heartbeat(self, token: str) -> None:
        """A callback task is alive: its ``HeartbeatSeconds`` start again."""
        name = await self._token_owner(token)
        if name.startswith(child_waits.CHILD_PREFIX):
            # A parked child's token: its record holds the wait; the timer wakes the parent.
            try:
                due = await child_waits.beat_child(self.backend.kv, name, token, self.clock.time())
            except LookupError:
                raise InvalidExecutionRequestError(
                    "token", "the task is no longer waiting"
                ) from None
            if due is not None:
                parent = child_waits.parent_of(name)
                await self.store.put_timer(timer_key(due, parent, "task"))
            return

        def beat(record: ExecutionRecord, history: History) -> None:
            wait = record.wait
            if record.status != RUNNING or wait is None or wait.get("token") != token:
                raise InvalidExecutionRequestError("token", "the task is no longer waiting")
            if wait.get("heartbeat") is not None:
                wait["heartbeat_at"] = self.clock.time() + wait["heartbeat"]

        record = await self._update(name, beat)
        wait = record.wait or {}
        if wait.get("heartbeat_at") is not None:
            await self.store.put_timer(timer_key(wait["heartbeat_at"], name, "task"))

    # -- running -----------------------------------------------------------------------

    async def run_execution(self, name: str) -> None:
        """Advance ``name`` until it finishes or waits (for a timer or a callback)."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                await self._advance(name)
        finally:
            if not lock.locked() and self._locks.get(name) is lock:
                del self._locks[name]

    async def _advance(self, name: str) -> None:
        loaded = await self.store.load(name)
        while loaded is not None:
            record, version = loaded
            now = self.clock.time()
            if not runnable(record, now):
                if not await self._child_ended(record):
                    return
                # Woken by its child's end before the fallback timer: look at it now
                # (changed in memory only; the transition's save records what follows).
                record.wait = {**(record.wait or {}), "at": now}
            if record.flow not in self.machines:
                # Another version of the app's flow (a rolling deploy): pass it on.
                await self._pass_on(record)
                return
            try:
                advanced = await self.runner.run(record, version)
            except FencedError:
                return  # someone else moved it on; their worker carries on
            if advanced is not None:
                ended = advanced[0]
                if ended.parent is not None and ended.status != RUNNING:
                    await self._enqueue(ended.parent)  # the parent waits for this one
            loaded = advanced if advanced is not None else await self.store.load(name)

    async def _child_ended(self, record: ExecutionRecord) -> bool:
        """Whether ``record`` waits (on its fallback timer) for a child that has ended."""
        wait = record.wait
        if record.status != RUNNING or wait is None:
            return False
        # One child execution (a .sync task), or those parked Map/Parallel children wait for.
        names = [wait["child"]] if wait.get("child") is not None else wait.get("children", [])
        for name in names:
            child = await self.store.load(name)
            if child is not None and child[0].status != RUNNING:
                return True
        return False

    async def _pass_on(self, record: ExecutionRecord) -> None:
        """Hand ``record``'s execution to the services that have its flow."""
        # Appended before the shared entry is acknowledged: a crash in between
        # repeats the hand-off (harmless), never loses it.
        await self.backend.log.append(handoff_stream(record.flow), record.name.encode())
        first = record.flow not in self.passed_on
        self.passed_on[record.flow] += 1
        # Once per flow at WARNING (a rolling deploy is under way, or a flow was
        # removed while executions of it still run), then at DEBUG.
        _log.log(
            logging.WARNING if first else logging.DEBUG,
            "execution %s: this service has no flow %r; passed on to a service that has it",
            record.name,
            record.flow,
        )

    async def take_handoffs(self, consumer: str = "handoffs") -> int:
        """Run the executions passed on to this service's flows; return how many entries.

        Reads each flow's hand-off stream once (up to 16 entries each); an
        entry is acknowledged once its execution has been advanced, so one
        taken by a service that dies is redelivered after its lease.
        """
        log, taken = self.backend.log, 0
        for flow in self.machines:
            stream = handoff_stream(flow)
            entries = await log.read(stream, _GROUP, consumer, count=16, lease=self.lease)
            for entry in entries:
                await self.run_execution(entry.data.decode())
                await self._ack(stream, [entry.id])
            taken += len(entries)
        return taken

    async def drain(self, consumer: str = "drain") -> int:
        """Fire due timers and run queued work (the shared queue and the hand-offs to
        this service's flows) until there is none (tests, scripts)."""
        done = 0
        while True:
            await self.fire_due_timers()
            entries = await self.backend.log.read(
                WORK_STREAM, _GROUP, consumer, count=16, lease=self.lease
            )
            for entry in entries:
                await self.run_execution(entry.data.decode())
                done += 1
            if entries:
                await self._ack(WORK_STREAM, [entry.id for entry in entries])
            taken = await self.take_handoffs(consumer)
            done += taken
            if not entries and not taken:
                return done

    async def fire_due_timers(self) -> int:
        """Handle every timer due now; return how many."""
        fired = 0
        now = self.clock.time()
        due, self._seen_next = await self.store.timers_due(now)
        for timer in due:
            if timer.kind == "orphan":
                await self._stop_orphan(timer.name)
                await self.store.drop_timer(timer)
                fired += 1
                continue
            if timer.kind == "task":
                await self.runner.expire_callback(timer.name)
            elif timer.kind == "wake" and await self._early(timer.name, now):
                continue  # this process's clock is behind the one that set it: keep it
            await self._enqueue(timer.name)
            # Enqueued before the timer goes: a crash in between repeats the wake, never loses it.
            await self.store.drop_timer(timer)
            fired += 1
        return fired

    def _stopped(self) -> bool:
        return self._stopping

    async def _early(self, name: str, now: float) -> bool:
        """Whether ``name`` waits for a timer that is not due yet on this clock."""
        loaded = await self.store.load(name)
        if loaded is None:
            return False
        wait = loaded[0].wait
        return bool(
            loaded[0].status == RUNNING
            and wait is not None
            and wait["kind"] == "timer"
            and wait["at"] > now
        )

    async def _work(self, consumer: str) -> None:
        log = self.backend.log
        while not self._stopping:
            try:
                entries = await log.read(
                    WORK_STREAM, _GROUP, consumer, count=1, lease=self.lease, block=self.block
                )
                for entry in entries:
                    await self.run_execution(entry.data.decode())
                    await self._ack(WORK_STREAM, [entry.id])
            except asyncio.CancelledError:
                raise
            except Exception:  # an execution's bug or a backend hiccup: leave it for redelivery
                if self._stopped():
                    return
                _log.exception("flow worker %s", consumer)
                await self.clock.sleep(self.poll)

    async def _timers(self) -> None:
        while not self._stopping:
            # Timers stored from here on are either seen by this look or noted for the
            # sleep after it.
            self._noted, self._wake_at = None, math.inf
            try:
                await self.fire_due_timers()
                if self.trimmer.due():
                    await self.trim_streams()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("flow timers")
                self._seen_next = None
            await self._sleep_to_next_timer()

    def _timer_stored(self, due: float) -> None:
        """A timer due at ``due`` was stored by this process (see ``_timers``)."""
        if self._noted is None or due < self._noted:
            self._noted = due
        if due < self._wake_at:
            self._timer_added.set()

    async def _sleep_to_next_timer(self) -> None:
        """Sleep until the earliest timer known (at most ``poll``), waking sooner when
        an earlier one is stored meanwhile."""
        until = self.clock.time() + self.poll
        while True:
            # Nothing awaits between here and the wait: a timer stored from now on
            # either is counted below or sets the event.
            self._timer_added.clear()
            target = min(
                [until] + [due for due in (self._seen_next, self._noted) if due is not None]
            )
            delay = target - self.clock.time()
            if delay <= 0:
                return
            self._wake_at = target
            sleeping = asyncio.ensure_future(self.clock.sleep(delay))
            added = asyncio.ensure_future(self._timer_added.wait())
            try:
                await asyncio.wait((sleeping, added), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeping.cancel()
                added.cancel()
            if sleeping.done() and not sleeping.cancelled():
                return

    async def _handoffs(self, consumer: str) -> None:
        """Take hand-offs every ``poll`` (at once again while there are more)."""
        while not self._stopping:
            taken = 0
            try:
                taken = await self.take_handoffs(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:  # as in _work: the entries are redelivered after their lease
                if self._stopped():
                    return
                _log.exception("flow hand-offs")
            if not taken:
                await self.clock.sleep(self.poll)

    async def trim_streams(self) -> int:
        """Drop acknowledged entries of ``flows.work`` and this service's hand-off
        streams that are ``keep_acked`` s older than any still needed; return how many."""
        dropped = await self.trimmer.trim(WORK_STREAM, [_GROUP])
        for flow in self.machines:
            dropped += await self.trimmer.trim(handoff_stream(flow), [_GROUP])
        return dropped

    # -- helpers -----------------------------------------------------------------------

    async def _ack(self, stream: str, ids: list[str]) -> None:
        await self.backend.log.ack(stream, _GROUP, ids)
        self.trimmer.acked(stream, _GROUP, ids)

    def _not_express(self, name: str, what: str) -> None:
        if self.express.get(name) is not None:
            raise InvalidExecutionRequestError("name", f"an Express execution cannot be {what}")

    async def _enqueue(self, name: str) -> None:
        await self.backend.log.append(WORK_STREAM, name.encode())

    async def _load(self, name: str) -> ExecutionRecord:
        loaded = await self.store.load(check_name(name))
        if loaded is None:
            raise ExecutionNotFoundError(name)
        return loaded[0]

    async def _update(self, name: str, change: Any) -> ExecutionRecord:
        """Apply ``change(record, history)`` with compare-and-set, retrying on conflicts
        (``change`` may return timer keys to write with the save)."""
        while True:
            loaded = await self.store.load(check_name(name))
            if loaded is None:
                raise ExecutionNotFoundError(name)
            record, version = loaded
            history = History()
            timers = change(record, history) or ()
            record.seq += 1
            try:
                await self.store.save(record, version, events_of(history), timers)
            except FencedError:
                continue
            return record

    async def _token_owner(self, token: str) -> str:
        name = await self.store.token_owner(token)
        if name is None:
            raise InvalidExecutionRequestError("token", "no task has this token")
        return name

    async def _answer(self, token: str, outcome: core.Outcome, event: str) -> None:
        name = await self._token_owner(token)
        if not await self.runner.complete_callback(name, token, outcome, event):
            raise InvalidExecutionRequestError("token", "the task is no longer waiting")
        if name.startswith(child_waits.CHILD_PREFIX):
            name = child_waits.parent_of(name)  # a parked child's: its parent goes on
        await self._enqueue(name)
