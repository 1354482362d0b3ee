"""Durable Parallel branches and Map iterations: each child keeps its own progress.

The durable runner (:mod:`reflow.flows.durable`) runs a Parallel or Map
state's children within the state's transition, as the in-memory executor
does, but through a :class:`Children` scope: every child — a branch, a Map
iteration or batch, a Distributed Map's child execution — has a record of
its own in ``KV``::

    flows/c/EXECUTION/VISIT.RETRY/POSITION
    flows/c/EXECUTION/VISIT.RETRY/POSITION/VISIT.RETRY/POSITION   (a nested one)

(``VISIT`` the transition at which the state was entered, ``RETRY`` how
many times the state was retried, ``POSITION`` the child's place, padded).
The record is an :class:`~reflow.flows.store.ExecutionRecord`: the child's
cursor, status, output or error, and the events it recorded so far.

A child saves itself (a compare-and-set on its own key) after every state
that did something — a Task, a Wait, a nested Parallel or Map — and when it
ends; pure states (Pass, Choice, Succeed, Fail) ride along with the next
save, since doing them again changes nothing, and a child made only of
them is never written at all (when every child is like that, :func:`needed`
says so and the state runs exactly as in memory). The saves of one
event-loop turn are written together in one transaction (:class:`_Batch`),
and a scope's children wait for one shared read of its records, so they
start — and save — together. When the parent's transition is redone after
a crash, the scope reads its records once: a finished child gives its
outcome at once, an unfinished one goes on from its saved cursor, and only
the task in flight at the crash runs again, with the same idempotency key.

Keys: a branch's or iteration's tasks run under an execution id of its own
(the parent's id, ``/STATE@VISIT.RETRY/POSITION``; a Distributed Map child
has its Map Run child execution ARN, the Map Run id derived from the scope)
and the child's own visit counter, so each (child, state, visit, attempt)
has a key of its own. A retry back-off or a Wait inside a child is saved
first: after a crash only what is left of it is waited. One of ``PARK_AFTER``
seconds or more then *dozes* (:meth:`Children.doze`): it counts as parked, so
once every child has ended or parked the state parks and the parent's timer
at the earliest end wakes it; should its time come while the state still
runs, it goes on in place. A shorter one is slept in memory.

A child that reaches a ``.waitForTaskToken`` task or a running ``.sync``
nested execution *parks* (see :mod:`reflow.flows.child_waits`): its wait is
saved in its record and it holds its place until every child of the state
has ended or parked; then :func:`run_parkable` raises
:class:`~reflow.flows.child_waits.Parked` and the parent saves itself as
waiting for its children, keeping their records.

Two workers on one execution (a redelivered queue entry) may both drive the
children: a child save that finds its record moved on adopts the stored
record and goes on from there, so neither stalls, and the parent's own
compare-and-set decides whose transition counts. Once the parent's
transition that leaves the state is saved, the runner drops the records
(:func:`forget`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from reflow.backends import KV, Delete, Item, Put
from reflow.clock import Clock
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.flows import child_waits, children, nested
from reflow.flows import interpreter as core
from reflow.flows.branches import replay, run_branches
from reflow.flows.calls import ExecutionTimedOut
from reflow.flows.child_waits import CALLBACK_SUFFIX, Host, Parked
from reflow.flows.errors import TIMEOUT
from reflow.flows.executor import Executor, reads_context
from reflow.flows.history import History, iso_time
from reflow.flows.model import StateMachine
from reflow.flows.retry import backoff_delay
from reflow.flows.store import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    TIMED_OUT,
    ExecutionRecord,
    FencedError,
    timer_key,
    token_key,
)
from reflow.flows.tasks import invoke

__all__ = ["PARK_AFTER", "Children", "Parked", "forget", "needed", "run_parkable", "scope_key"]

_PREFIX = "flows/c/"
_PAGE = 500
_CHUNK = 256  # child records written in one transaction at most
_YIELD_EVERY = 64
# A Wait or back-off inside a child at least this long (seconds) may park the state.
PARK_AFTER = 1.0
_TYPES = ("Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
_ENTERED = {kind: f"{kind}StateEntered" for kind in _TYPES}
_EXITED = {kind: f"{kind}StateExited" for kind in _TYPES}
_FINAL = (core.Goto, core.Succeed, core.Fail)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_ACCOUNT = "arn:aws:states:local:000000000000"
# States that never do I/O: a child made only of them is never saved (see _may_save).
_PURE = frozenset({"Pass", "Choice", "Succeed", "Fail"})
_MAY_SAVE: dict[int, tuple[StateMachine, bool]] = {}
_T = TypeVar("_T")


def needed(action: core.Branches) -> bool:
    """Whether ``action``'s children need durable runs: a Distributed Map always (its
    Map Run id must survive a crash); else when some child has a state doing I/O.

    Children made only of Pass, Choice, Succeed and Fail states run as in memory,
    events and all: doing them again after a crash changes nothing.
    """
    return action.distributed is not None or any(
        _may_save(child.machine) for child in action.children
    )


def _may_save(machine: StateMachine) -> bool:
    """Whether a child running ``machine`` can ever save itself (it has a non-pure state)."""
    entry = _MAY_SAVE.get(id(machine))
    if entry is None or entry[0] is not machine:
        entry = (machine, any(state.type not in _PURE for state in machine.states.values()))
        if len(_MAY_SAVE) >= 1024:
            _MAY_SAVE.clear()
        # The machine is kept with its answer, so its id cannot be reused meanwhile.
        _MAY_SAVE[id(machine)] = entry
    return entry[1]


def scope_key(execution: str, visit: int, retry: int) -> str:
    """The key prefix (without the trailing ``/``) of a top-level state's children."""
    return f"{_PREFIX}{execution}/{visit}.{retry}"


async def forget(kv: KV, execution: str) -> int:
    """Delete every child record of ``execution``; return how many went."""
    prefix, gone = f"{_PREFIX}{execution}/", 0
    while True:
        items = await kv.scan(prefix, limit=_PAGE)
        if items:
            await kv.transact([Delete(item.key) for item in items])
            gone += len(items)
        if len(items) < _PAGE:
            return gone


async def run_parkable(
    scope: Children | None, action: core.Branches, work: Awaitable[core.Outcome]
) -> core.Outcome:
    """Await ``work`` (the state's ``run_branches``); raise :class:`Parked` instead
    once every child of ``scope`` has ended or parked and one at least parked.

    The parked children are cancelled then (their records hold where they stand).
    """
    task = asyncio.ensure_future(work)
    if scope is None or scope.host is None:
        return await task
    scope.total, scope.limit = len(action.children), action.max_concurrency or 0
    quiet = asyncio.ensure_future(scope.quiet.wait())
    try:
        done, _ = await asyncio.wait([task, quiet], return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            # The parked children end now, raising Parked: the state ends as
            # run_branches decides (a failed child still fails it fast).
            scope.release.set_exception(Parked())
        return await task
    except Parked:
        scope.held = True
        raise Parked(scope.wake_at(), scope.parked_children) from None
    finally:
        quiet.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Children:
    """The children of one Parallel/Map state entry, run durably (see the module doc).

    ``owner`` is the executor of the machine the state belongs to (the
    execution's, or a child's for a nested state); ``key`` the scope's key
    prefix. Implements :class:`~reflow.flows.branches.ChildRuns`.
    """

    def __init__(
        self, kv: KV, key: str, owner: Executor, state_name: str, host: Host | None = None
    ) -> None:
        self.kv = kv
        self.key = key
        self.owner = owner
        self.state_name = state_name
        # Lends callbacks and nested executions; without it a child cannot park.
        self.host = host
        # Parking (see child_waits): how many children are running, parked, began.
        self.active = self.parked = self.began = 0
        self.total = self.limit = 0
        self.quiet = asyncio.Event()
        self.release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved here, so a release nobody awaited logs nothing.
        self.release.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.parked_at: float | None = None
        # When each dozing child's wait ends (see doze): counted at once, since the
        # state tears its children down as soon as one raises Parked.
        self.dozing: list[float] = []
        self.parked_children: list[str] = []
        self.held = False  # the state parked: its records must stay
        # Whether any child record of this scope was found or written: if not, there
        # is nothing to forget once the state is over (no scan, no delete).
        self.touched = False
        self.batch = _Batch(kv)
        self._reading: asyncio.Future[dict[str, Item]] | None = None

    @property
    def run_id(self) -> str:
        """A Map Run id derived from the scope: the same on every redo of the state."""
        digest = hashlib.sha256(self.key.encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    async def branch(
        self, position: int, child: core.Child, base: Mapping[str, Any], history: History
    ) -> core.Succeed | core.Fail:
        """Run branch or iteration ``position`` to its end; its events go to ``history``.

        A child that parks (see :mod:`~reflow.flows.child_waits`) stays here until
        the state is torn down; once every child has ended or parked, the scope's
        ``quiet`` is set.
        """
        return await self._parkable(self._branch(position, child, base, history))

    def expect(self, total: int, limit: int) -> None:
        """How many children the state has, and its MaxConcurrency (0: no limit) — a
        Distributed Map knows them only once its items are read."""
        self.total, self.limit = total, limit

    async def _parkable(self, run: Awaitable[_T]) -> _T:
        """Await a child's ``run``, counting it as running until it ends or parks."""
        self.began += 1
        self.active += 1
        parked = False
        try:
            return await run
        except Parked as waiting:
            parked = True
            self.active -= 1
            self.parked += 1
            if waiting.at is not None:
                at = self.parked_at
                self.parked_at = waiting.at if at is None else min(at, waiting.at)
            self.parked_children.extend(waiting.children)
            self._settled()
            await asyncio.shield(self.release)  # raises Parked once the state parks
            raise AssertionError("unreachable") from None
        finally:
            if not parked:
                self.active -= 1
                self._settled()

    async def doze(self, until: float, clock: Clock) -> None:
        """A child waits until ``until`` (a Wait, a retry's back-off), saved already.

        Meanwhile it counts as parked: should every child of the state end or park,
        the state parks (no worker held; the parent's timer at the earliest such
        ``until`` wakes it) and :class:`Parked` is raised here. Should its time come
        first, it goes on here, as if it had slept.
        """
        self.active -= 1
        self.parked += 1
        self.dozing.append(until)
        self._settled()
        sleeper = asyncio.ensure_future(clock.sleep(max(0.0, until - clock.time())))
        try:
            await asyncio.wait([sleeper, self.release], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Counted as running again: _parkable counts it as parked should it park.
            self.active += 1
            self.parked -= 1
            if not sleeper.done():
                sleeper.cancel()
                await asyncio.gather(sleeper, return_exceptions=True)
        if sleeper.cancelled():
            # The state parks (or is torn down): its ``until`` stays in ``dozing``.
            raise Parked(until)
        sleeper.result()
        self.dozing.remove(until)  # its time came: it goes on, no wake is owed

    def wake_at(self) -> float | None:
        """When the parked state must look again: the earliest of its parked
        children's fallbacks and its dozing children's ends."""
        times = [*self.dozing] + ([self.parked_at] if self.parked_at is not None else [])
        return min(times) if times else None

    def _settled(self) -> None:
        """Set ``quiet`` when no child runs and none can start: all began (or the
        parked ones hold every ``MaxConcurrency`` slot), and one at least parked."""
        blocked = self.began >= self.total or (self.limit and self.parked >= self.limit)
        if self.parked and not self.active and blocked:
            self.quiet.set()

    async def _branch(
        self, position: int, child: core.Child, base: Mapping[str, Any], history: History
    ) -> core.Succeed | core.Fail:
        owner = self.owner
        if not _may_save(child.machine):
            # Nothing in it does I/O: running it again after a crash changes nothing, so
            # it runs as in memory (a Map whose iterations only reshape data costs no more).
            return await owner.run_machine(
                child.machine, child.input, child.variables, base, history
            )
        runner = Executor(
            child.machine,
            functions=owner.functions,
            clock=owner.clock,
            name=owner.name,
            machine_name=owner.machine_name,
            flows=owner.flows,
            blobs=owner.blobs,
        )
        label = self.key.rsplit("/", 1)[1]
        runner.execution_id = f"{owner.execution_id}/{self.state_name}@{label}/{position}"
        runner.deadline = owner.deadline
        key = f"{self.key}/{position:06d}"
        run = _ChildRun(self, key, runner, child, await self._find(key, child), owns_deadline=False)
        run.host = self.host
        try:
            return await run.drive(base)
        finally:
            replay(history, run.events())

    async def execution(self, index: int, runner: Executor, child: core.Child) -> ExecutionRecord:
        """Run a Distributed Map's child execution ``index`` (named by ``runner``)."""
        return await self._parkable(self._execution(index, runner, child))

    async def _execution(self, index: int, runner: Executor, child: core.Child) -> ExecutionRecord:
        key = f"{self.key}/{index:06d}"
        run = _ChildRun(self, key, runner, child, await self._find(key, child), owns_deadline=True)
        run.host = self.host
        record = run.record
        base = {
            "Execution": {
                "Id": runner.execution_id,
                "Input": record.input,
                "Name": runner.name,
                "RoleArn": "arn:aws:iam::000000000000:role/reflow",
                "StartTime": iso_time(record.start_time),
                "RedriveCount": 0,
            },
            "StateMachine": {
                "Id": f"{_ACCOUNT}:stateMachine:{runner.machine_name}",
                "Name": runner.machine_name,
            },
        }
        await run.drive(base)
        return run.record

    async def _find(self, key: str, child: core.Child) -> Item | None:
        """The stored record at ``key``; the first child to ask reads the whole scope.

        A child that can never save itself has no record to look for: a Map whose
        iterations only reshape data reads nothing.
        """
        if not _may_save(child.machine):
            return None
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            # Retrieved here, so a read whose every reader was cancelled logs nothing.
            self._reading.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: one child being cancelled must not cancel its siblings' read. All
        # the children wake together once it is done, so their saves batch (_Batch).
        stored = await asyncio.shield(self._reading)
        return stored.pop(key, None)

    async def _read(self) -> dict[str, Item]:
        """Every record of this scope (nested scopes read their own)."""
        found: dict[str, Item] = {}
        prefix, after = self.key + "/", None
        while True:
            items = await self.kv.scan(prefix, start_after=after, limit=_PAGE)
            for item in items:
                if "/" not in item.key[len(prefix) :]:
                    found[item.key] = item
            if len(items) < _PAGE:
                break
            after = items[-1].key
        self.touched = self.touched or bool(found)
        return found


class _Batch:
    """Child saves asked for in one event-loop turn, written together in one transaction.

    The children of a Map finish their tasks in bursts; one ``KV.transact`` of
    their records costs about half as much per record as as many puts (one
    round trip to Redis, one job of SQLite's writer). The first save of a turn
    leads: it lets the turn's other saves join, writes them all and hands
    each its new version — or, when a compare-and-set among them fails, writes
    them one by one so that each learns its own fate.
    """

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.waiting: list[tuple[Put, asyncio.Future[int]]] = []

    async def put(self, key: str, value: bytes, version: int) -> int:
        """Write ``value`` at ``key`` if it is at ``version``; the new version."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting.append((Put(key, value, expect_version=version), future))
        if len(self.waiting) > 1:
            return await future  # the turn's first save writes this one too
        batch: list[tuple[Put, asyncio.Future[int]]] = []
        try:
            await asyncio.sleep(0)  # the other children of this turn join in
            batch, self.waiting = self.waiting, []
            # Bounded transactions: a Map of thousands of items writes in chunks.
            chunks = [batch[at : at + _CHUNK] for at in range(0, len(batch), _CHUNK)]
            await asyncio.gather(*(self._write(chunk) for chunk in chunks))
        except asyncio.CancelledError:
            # Only a state being torn down cancels a child: its siblings go too.
            batch, self.waiting = batch or self.waiting, []
            for _, waiter in batch:
                waiter.cancel()
            raise
        return future.result()

    async def _write(self, batch: list[tuple[Put, asyncio.Future[int]]]) -> None:
        """Write ``batch`` and settle each waiter with its version or its error."""
        kv = self.kv
        try:
            if len(batch) > 1:
                try:
                    versions: list[int | BaseException] = list(
                        await kv.transact([put for put, _ in batch])
                    )
                except TransactionConflictError:
                    versions = []  # some record moved on: one by one below
            else:
                versions = []
            if not versions:
                versions = await asyncio.gather(
                    *(
                        kv.put(put.key, put.value, expect_version=put.expect_version)
                        for put, _ in batch
                    ),
                    return_exceptions=True,
                )
        except Exception as error:  # the backend failed: every save of the batch did
            versions = [error] * len(batch)
        for (_, waiter), outcome in zip(batch, versions, strict=True):
            if waiter.done():
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)


class _Adopted(Exception):
    """A child's save found its record moved on; the stored one was adopted."""


class _ChildRun:
    """One child's durable run: its record, the events saved and those not yet saved."""

    def __init__(
        self,
        scope: Children,
        key: str,
        runner: Executor,
        child: core.Child,
        stored: Item | None,
        *,
        owns_deadline: bool,
    ) -> None:
        self.scope = scope
        self.kv = scope.kv
        self.key = key
        self.runner = runner
        self.machine: StateMachine = child.machine
        # A Distributed Map child is an execution: its TimeoutSeconds is its own, and
        # running past it times the child out (not the parent).
        self.owns_deadline = owns_deadline
        self.saved: list[list[Any]] = []
        self.pending = History()
        self.host: Host | None = None  # set for a branch or iteration: it may park
        if stored is not None:
            self._adopt(stored)
            return
        now = runner.clock.time()
        timeout = child.machine.timeout_seconds if owns_deadline else None
        self.record = ExecutionRecord(
            name=runner.name,
            flow="",
            id=runner.execution_id,
            input=child.input,
            state=child.machine.start_at,
            state_input=child.input,
            variables=dict(child.variables),
            start_time=now,
            deadline=now + timeout if timeout is not None else None,
        )
        self.version = 0
        if owns_deadline:
            runner.deadline = self.record.deadline

    def events(self) -> list[list[Any]]:
        """The child's events so far, saved or not, in their stored form."""
        return self.saved + self.pending.stored()

    def _adopt(self, stored: Item) -> None:
        self.record = ExecutionRecord.from_json(stored.value)
        self.version = stored.version
        self.saved = json.loads(b"[" + self.record.tail + b"]")
        self.pending = History()
        if self.owns_deadline:
            self.runner.deadline = self.record.deadline

    async def drive(self, base: Mapping[str, Any]) -> core.Succeed | core.Fail:
        """Run the child from where its record stands to its end."""
        while True:
            record = self.record
            if record.status == SUCCEEDED:
                return core.Succeed(record.output, record.variables)
            if record.status != RUNNING:
                return core.Fail(record.error or "", record.cause or "")
            try:
                return await self._steps(base)
            except _Adopted:
                continue
            except ExecutionTimedOut:
                if not self.owns_deadline:
                    raise  # the parent execution's deadline: it times out as a whole
                record.status, record.stop_time = TIMED_OUT, self.runner.clock.time()
                record.error = TIMEOUT
                record.cause = "The execution ran past its TimeoutSeconds"
                try:
                    await self._save()
                except _Adopted:
                    continue

    async def _steps(self, base: Mapping[str, Any]) -> core.Succeed | core.Fail:
        """Make the child's transitions (as ``Executor.run_machine`` does), saving them."""
        record, runner, machine = self.record, self.runner, self.machine
        clock, step, states = runner.clock, core.step, machine.states
        cursor = core.Cursor(
            record.state, record.state_input, record.variables, tuple(record.attempts)
        )
        context_read = reads_context(machine)
        worked = self.version > 0
        transitions = 0
        while True:
            transitions += 1
            if transitions % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a Choice loop must not hold the event loop
            if runner.deadline is not None:
                runner.check_deadline()
            state = states[cursor.state]
            # Saved mid-state (a retry back-off or a Wait under way): it goes on, not again.
            resumed, wait = record.entered, record.wait
            if not resumed:
                record.entered_at = clock.time()
                self.pending.state(
                    _ENTERED[state.type], record.entered_at, state.name, "input", cursor.input
                )
            context: Mapping[str, Any] = base
            if context_read or state.type == "Task":
                context = self._context(base, state.name, cursor)
            runner.visit = record.seq
            if resumed and wait is not None and wait["kind"] == "timer":
                await self._sleep_until(wait["at"])
                record.wait = None
                slept = core.Result(None) if wait["then"] == "outcome" else None
                action = step(machine, cursor, context, slept)
            elif resumed and wait is not None:
                # Parked on a token or a nested execution (see child_waits).
                found = await self._resume(wait, cursor, context, base)
                record.wait = None
                action = step(machine, cursor, context, found)
            else:
                action = step(machine, cursor, context)
            did = False
            while not isinstance(action, _FINAL):
                if isinstance(action, core.Retry):
                    cursor = action.cursor
                    delay = backoff_delay(action.retrier, action.attempt)
                    until = clock.time() + delay
                    if delay > 0:
                        # Saved first: after a crash the back-off goes on, then the next
                        # attempt (its own key) — not the attempts already made.
                        await self._pause(cursor, until, "enter")
                        worked = True
                    await self._sleep_until(until)
                    record.wait = None
                    context = self._context(base, state.name, cursor)
                    action = step(machine, cursor, context)
                    continue
                outcome: core.Outcome
                host = self.host
                if isinstance(action, core.Invoke) and host is not None and _parks(host, action):
                    outcome = await self._wait(host, action, cursor, context)
                elif isinstance(action, core.Invoke):
                    outcome = await invoke(runner, action, cursor, context, self.pending)
                    await nested.settle(runner)
                elif isinstance(action, core.Sleep):
                    now = clock.time()
                    until = (
                        action.until if action.until is not None else now + (action.seconds or 0)
                    )
                    if until > now:
                        # Saved first: after a crash only what is left of the Wait is waited.
                        await self._pause(cursor, until, "outcome")
                    await self._sleep_until(until)
                    record.wait = None
                    outcome = core.Result(None)
                else:
                    outcome = await self._branches(action, cursor, state.name, base)
                did = worked = True
                action = step(machine, cursor, context, outcome)
            record.seq += 1
            record.entered, record.wait, record.attempts = False, None, []
            if isinstance(action, core.Fail):
                record.status, record.error, record.cause = FAILED, action.error, action.cause
                record.stop_time = clock.time()
                if worked:
                    await self._save()
                return action
            output = action.cursor.input if isinstance(action, core.Goto) else action.output
            self.pending.state(_EXITED[state.type], clock.time(), state.name, "output", output)
            if isinstance(action, core.Succeed):
                record.status, record.output = SUCCEEDED, output
                record.variables = dict(action.variables)
                record.stop_time = clock.time()
                if worked:
                    await self._save()
                return action
            cursor = action.cursor
            record.state, record.state_input = cursor.state, cursor.input
            record.variables = dict(cursor.variables)
            if did:
                await self._save()

    def _context(
        self, base: Mapping[str, Any], state_name: str, cursor: core.Cursor
    ) -> dict[str, Any]:
        """The context object of a state: ``State`` added, and ``Task.Token`` for a
        callback task of a child that may park (the same on every redo)."""
        record = self.record
        context = {
            **base,
            "State": {
                "EnteredTime": iso_time(record.entered_at),
                "Name": state_name,
                "RetryCount": cursor.retry_count,
            },
        }
        state = self.machine.states[state_name]
        resource = getattr(state, "resource", None)
        if self.host is not None and str(resource).endswith(CALLBACK_SUFFIX):
            token = child_waits.child_token(
                self.runner.execution_id, state_name, record.seq, cursor.retry_count
            )
            context["Task"] = {"Token": token}
        return context

    async def _branches(
        self, action: core.Branches, cursor: core.Cursor, state_name: str, base: Mapping[str, Any]
    ) -> core.Outcome:
        """A nested Parallel or Map; should its children park, this child parks too."""
        record, runner = self.record, self.runner
        if not needed(action):
            return await run_branches(runner, action, base, self.pending, state_name, None)
        scope = Children(
            self.scope.kv,
            f"{self.key}/{record.seq}.{cursor.retry_count}",
            runner,
            state_name,
            self.host,
        )
        inner = History()
        try:
            outcome = await run_parkable(
                scope, action, run_branches(runner, action, base, inner, state_name, scope)
            )
        except Parked:
            wait = {"kind": "children"}
            if record.wait != wait or self.pending.stored():
                record.entered, record.attempts = True, list(cursor.attempts)
                record.wait = wait
                await self._save()
            raise
        replay(self.pending, inner.stored())
        return outcome

    async def _wait(
        self, host: Host, action: core.Invoke, cursor: core.Cursor, context: Mapping[str, Any]
    ) -> core.Outcome:
        """A callback task or a nested execution: its outcome now, or park (see
        :mod:`~reflow.flows.child_waits`); the wait is saved before the function or
        the nested execution is started."""
        record, clock = self.record, self.runner.clock
        record.entered, record.attempts = True, list(cursor.attempts)
        if children.handles(action.resource):
            return await self._nested(host, action, cursor)
        token = str(context["Task"]["Token"])
        now = clock.time()
        resource = action.resource[: -len(CALLBACK_SUFFIX)]
        calls = host.calls(resource)
        wait: dict[str, Any] = {
            "kind": "token", "token": token, "heartbeat": action.heartbeat, "sent": not calls,
            "resource": resource, "payload": action.payload, "timeout": action.timeout,
        }  # fmt: skip
        name = child_waits.parent_of(self.key)  # the execution its timers wake
        timers = []
        if action.timeout is not None:
            wait["timeout_at"] = now + action.timeout
            timers.append(timer_key(wait["timeout_at"], name, "task"))
        if action.heartbeat is not None:
            wait["heartbeat_at"] = now + action.heartbeat
            timers.append(timer_key(wait["heartbeat_at"], name, "task"))
        self.pending.add(
            "TaskScheduled", now, name=cursor.state, resource=action.resource,
            parameters=action.payload,
        )  # fmt: skip
        self.pending.add("TaskStarted", now, name=cursor.state)
        record.wait = wait
        # The token and timers first: a stale one is harmless (the answer checks the
        # child's record), a missing one would strand the child.
        await self.kv.transact(
            [Put(token_key(token), self.key.encode())] + [Put(timer, b"") for timer in timers]
        )
        host.store.noted(timers)
        await self._save()
        return await self._deliver(host, wait, cursor, context)

    async def _deliver(
        self, host: Host, wait: dict[str, Any], cursor: core.Cursor, context: Mapping[str, Any]
    ) -> core.Outcome:
        """Hand the token over (if the task calls something), then park."""
        if not wait.get("sent", True):
            outcome = await host.deliver(wait, cursor, context, self.runner)
            if isinstance(outcome, core.Failure):
                # Only its failure counts: the task fails with it (Retry/Catch apply).
                self.pending.add(
                    "TaskFailed", self.runner.clock.time(), name=cursor.state,
                    error=outcome.error, cause=outcome.cause,
                )  # fmt: skip
                return outcome
            wait["sent"] = True
            await self._save()
        raise Parked()

    async def _nested(self, host: Host, action: core.Invoke, cursor: core.Cursor) -> core.Outcome:
        """startExecution (plain, .sync, .sync:2) as a durable execution (children.py),
        named per (child, state, visit, attempt); a running ``.sync`` one parks."""
        record = self.record
        start = host.start_child
        if start is None:
            return await invoke(self.runner, action, cursor, {}, self.pending)
        # As the top level names and wakes it: this child's id, visit and attempt; the
        # nested execution's end wakes the top-level execution driving this child.
        shim = dataclasses.replace(
            record,
            name=child_waits.parent_of(self.key),
            visit=record.seq,
            attempts=list(cursor.attempts),
        )
        found = await children.durable_child(
            host.store,
            start,
            host.machines,
            shim,
            action,
            self.pending,
            self.runner.clock.time(),
            host.stop_child,
        )
        if isinstance(found, children.Pending):
            wait = {"kind": "child", "at": found.at, "child": found.child}
            if record.wait is None or record.wait.get("child") != found.child:
                record.wait = wait
                await self._save()
            raise Parked(found.at, [found.child])
        return found

    async def _resume(
        self,
        wait: dict[str, Any],
        cursor: core.Cursor,
        context: Mapping[str, Any],
        base: Mapping[str, Any],
    ) -> core.Outcome:
        """A parked child's outcome on the redo, or park again."""
        host, state = self.host, self.machine.states[cursor.state]
        if host is None:
            raise Parked()  # not expected: only a host's children park
        kind = wait["kind"]
        if kind == "outcome":
            if "error" in wait:
                return core.Failure(wait["error"], wait.get("cause") or "")
            return core.Result(wait.get("result"))
        if kind == "token":
            failure = child_waits.expired(wait, self.runner.clock.time(), cursor.state)
            if failure is not None:
                self.pending.add(
                    "TaskTimedOut", self.runner.clock.time(), name=cursor.state,
                    error=failure.error, cause=failure.cause,
                )  # fmt: skip
                return failure
            return await self._deliver(host, wait, cursor, context)
        # A nested execution or a nested Parallel/Map: the state's action again.
        action = core.step(self.machine, cursor, context)
        if kind == "child" and isinstance(action, core.Invoke):
            return await self._nested(host, action, cursor)
        if isinstance(action, core.Branches):
            return await self._branches(action, cursor, state.name, base)
        raise AssertionError(f"a child parked on {kind!r} at a {state.type} state")

    async def _sleep_until(self, until: float) -> None:
        """Wait until ``until`` (the wait saved in the record already): a child that
        may park dozes (see :meth:`Children.doze`) unless the wait is short; raises
        ExecutionTimedOut should the deadline come first."""
        runner = self.runner
        clock, deadline = runner.clock, runner.deadline
        if self.host is None or until - clock.time() < PARK_AFTER:
            # Short: parking (a save of the parent, a timer, a redo reading every
            # child record) would cost more than holding the worker this long.
            await _delay(runner, max(0.0, until - clock.time()))
            return
        if deadline is not None and deadline <= until:
            await self.scope.doze(deadline, clock)
            raise ExecutionTimedOut()
        await self.scope.doze(until, clock)

    async def _pause(self, cursor: core.Cursor, until: float, then: str) -> None:
        """Save the child mid-state: waiting until ``until``, then ``then`` (``"enter"``
        the state again for a retry, or take the Wait state's ``"outcome"``)."""
        record = self.record
        record.entered, record.attempts = True, list(cursor.attempts)
        record.wait = {"kind": "timer", "at": until, "then": then}
        await self._save()

    async def _save(self) -> None:
        """Save the record with the events not saved yet, or adopt the stored one."""
        record = self.record
        fresh = self.pending.stored()
        kept = record.tail
        if fresh:
            encoded = _ENCODE(fresh)[1:-1].encode()
            record.tail = record.tail + b"," + encoded if record.tail else encoded
        self.scope.touched = True
        try:
            self.version = await self.scope.batch.put(self.key, record.to_json(), self.version)
        except (VersionConflictError, TransactionConflictError):
            record.tail = kept
            stored = await self.kv.get(self.key)
            if stored is None:
                # The scope was dropped: the parent's transition was saved by another worker.
                raise FencedError(self.key) from None
            self._adopt(stored)
            raise _Adopted() from None
        self.saved.extend(fresh)
        self.pending = History()


async def _delay(runner: Executor, seconds: float) -> None:
    """Sleep on the runner's clock, raising ExecutionTimedOut at its deadline."""
    clock, deadline = runner.clock, runner.deadline
    if deadline is not None and clock.time() + seconds >= deadline:
        await clock.sleep(max(0.0, deadline - clock.time()))
        raise ExecutionTimedOut()
    await clock.sleep(seconds)


def _parks(host: Host, action: core.Invoke) -> bool:
    """Whether a child's task is a callback or a durable nested execution."""
    resource = action.resource
    return resource.endswith(CALLBACK_SUFFIX) or (
        host.start_child is not None and children.handles(resource)
    )
