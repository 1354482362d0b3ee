"""Parallel branches and inline Map iterations, run in memory.

:func:`run_branches` runs the children a
:class:`~reflow.flows.actions.Branches` action lists, each one a whole state
machine, concurrently (at most ``MaxConcurrency`` at a time), records the
``…StateStarted`` / ``MapIteration…`` / ``…StateSucceeded`` events and
gathers the outcomes. Unless a tolerated failure count or percentage is set,
the first child to fail stops the others at once. A Distributed Map hands
over to :mod:`reflow.flows.distributed`.

In memory the children record their events into the state's history as
they happen. The durable runner passes ``runs`` (a :class:`ChildRuns`, see
:mod:`reflow.flows.iterations`): each child then runs through it, keeping
its progress in a record of its own, records into a history of its own,
and the children's events join the state's history in child order once
the state is over — the same history whether or not a crash came between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from reflow.flows import distributed
from reflow.flows import interpreter as core
from reflow.flows.child_waits import Parked
from reflow.flows.history import History

if TYPE_CHECKING:
    from reflow.flows.executor import Executor
    from reflow.flows.nested import Finished

__all__ = ["ChildRuns", "replay", "run_branches"]


class ChildRuns(Protocol):
    """How the durable runner runs a Parallel/Map state's children (see ``iterations``)."""

    @property
    def run_id(self) -> str:
        """The Map Run id of a Distributed Map (the same on every redo of the state)."""

    async def branch(
        self, position: int, child: core.Child, base: Mapping[str, Any], history: History
    ) -> core.Succeed | core.Fail:
        """Run branch or iteration ``position`` to its end, its events into ``history``."""

    async def execution(self, index: int, runner: Executor, child: core.Child) -> Finished:
        """Run child execution ``index`` of a Distributed Map (``runner`` names it)."""

    def expect(self, total: int, limit: int) -> None:
        """How many children a Distributed Map has (once its items are read), and its
        MaxConcurrency (0: none)."""


async def run_branches(
    executor: Executor,
    action: core.Branches,
    base: Mapping[str, Any],
    history: History,
    state_name: str,
    runs: ChildRuns | None = None,
) -> core.Outcome:
    """Run every child of ``action`` for ``executor``; their gathered outcome."""
    if action.distributed is not None:
        return await distributed.run_map_run(executor, action, history, state_name, runs)
    kind = action.kind
    clock = executor.clock
    history.add(f"{kind}StateStarted", clock.time(), name=state_name, length=len(action.children))
    gate = asyncio.Semaphore(action.max_concurrency) if action.max_concurrency else None
    fail_fast = action.tolerated_count is None and action.tolerated_percentage is None
    # Durable children record apart, joined in child order at the end (see the module doc).
    own = [History() for _ in action.children] if runs is not None else None

    async def one(position: int, child: core.Child) -> core.Outcome:
        into = own[position] if own is not None else history
        if gate is None:
            outcome = await _run_child(executor, position, child, base, into, state_name, runs)
        else:
            async with gate:
                outcome = await _run_child(executor, position, child, base, into, state_name, runs)
        if fail_fast and isinstance(outcome, core.Failure):
            # Raising wakes asyncio.wait at once, so the other children are stopped.
            raise _ChildFailed(outcome)
        return outcome

    tasks = [asyncio.ensure_future(one(*pair)) for pair in enumerate(action.children)]
    outcome: core.Outcome | None = None
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for part in own or ():
        replay(history, part.stored())
    parked: Parked | None = None
    for task in tasks:
        error = task.exception() if not task.cancelled() else None
        if isinstance(error, _ChildFailed):
            outcome = error.outcome
            break
        if isinstance(error, Parked):
            parked = parked or error  # a failure fails the state even so
        elif error is not None:
            raise error
    if outcome is None and parked is not None:
        raise parked
    if outcome is None:
        outcome = core.gather(action, [task.result() for task in tasks])
    if isinstance(outcome, core.Result):
        history.add(f"{kind}StateSucceeded", clock.time(), name=state_name)
    else:
        history.add(
            f"{kind}StateFailed",
            clock.time(),
            name=state_name,
            error=outcome.error,
            cause=outcome.cause,
        )
    return outcome


async def _run_child(
    executor: Executor,
    position: int,
    child: core.Child,
    base: Mapping[str, Any],
    history: History,
    state_name: str,
    runs: ChildRuns | None,
) -> core.Outcome:
    """Run one branch or iteration to its end, recording Map iteration events."""
    clock = executor.clock
    if child.index is not None:
        history.add("MapIterationStarted", clock.time(), name=state_name, index=child.index)
    if runs is None:
        end = await executor.run_machine(child.machine, child.input, child.variables, base, history)
    else:
        end = await runs.branch(position, child, base, history)
    if isinstance(end, core.Succeed):
        if child.index is not None:
            history.add("MapIterationSucceeded", clock.time(), name=state_name, index=child.index)
        return core.Result(end.output)
    if child.index is not None:
        history.add(
            "MapIterationFailed",
            clock.time(),
            name=state_name,
            index=child.index,
            error=end.error,
            cause=end.cause,
        )
    return core.Failure(end.error, end.cause)


def replay(history: History, stored: list[list[Any]]) -> None:
    """Append events in their stored form (:meth:`History.stored`) to ``history``."""
    for event in stored:
        if len(event) == 5:
            history.state(*event)
        else:
            history.add(event[0], event[1], **event[2])


class _ChildFailed(Exception):
    """A branch or iteration failed and the state fails fast."""

    def __init__(self, outcome: core.Failure) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome
