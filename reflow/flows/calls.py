"""Calling a task function under its TimeoutSeconds and HeartbeatSeconds.

A task function gets a :class:`~reflow.flows.tasks.TaskContext` whose
``heartbeat()`` records the time on the executor's clock. :func:`call`
races the function against two limits: the task's (and the execution's)
remaining time, and ``HeartbeatSeconds`` after the latest heartbeat (or the
start). Whichever runs out first ends the call with :class:`TaskTimeout` or
:class:`HeartbeatTimeout`. A synchronous function cannot be interrupted: its
heartbeats are checked when it returns, so a gap longer than
``HeartbeatSeconds`` (on the clock, a FakeClock included) still fails it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from reflow.clock import Clock

__all__ = ["Beats", "ExecutionTimedOut", "HeartbeatTimeout", "TaskTimeout", "call"]


class ExecutionTimedOut(Exception):
    """The execution's own TimeoutSeconds passed (the ``check`` given to :func:`call`
    raises it); not a task's error, so no Catch sees it."""


class TaskTimeout(Exception):
    """A task ran past its TimeoutSeconds (or the execution's remaining time)."""


class HeartbeatTimeout(Exception):
    """A task sent no heartbeat within its HeartbeatSeconds."""


class Beats:
    """The time of a task's latest heartbeat (its start until it sends one)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = clock.time()
        self._changed = asyncio.Event()

    def beat(self) -> None:
        """Record a heartbeat now (what ``TaskContext.heartbeat()`` calls)."""
        self.last = self.clock.time()
        self._changed.set()

    def overdue(self, heartbeat: float | None) -> bool:
        """Whether more than ``heartbeat`` seconds passed since the latest beat."""
        return heartbeat is not None and self.clock.time() - self.last > heartbeat


async def call(
    invoke: Callable[[], Any],
    clock: Clock,
    *,
    limit: float | None,
    heartbeat: float | None,
    beats: Beats,
    check: Callable[[], None],
) -> Any:
    """Run ``invoke()`` (sync or async) within ``limit`` seconds and ``heartbeat``.

    ``check`` is called when a limit runs out, before raising
    :class:`TaskTimeout` (the executor raises its own execution-timeout there).
    """
    result = invoke()
    if not inspect.isawaitable(result):
        if beats.overdue(heartbeat):
            raise HeartbeatTimeout()
        return result
    if limit is None and heartbeat is None:
        return await result
    return await _race(result, clock, limit, heartbeat, beats, check)


async def _race(
    work: Awaitable[Any],
    clock: Clock,
    limit: float | None,
    heartbeat: float | None,
    beats: Beats,
    check: Callable[[], None],
) -> Any:
    task = asyncio.ensure_future(work)
    started = clock.time()
    try:
        while True:
            now = clock.time()
            ends = []
            if limit is not None:
                ends.append(started + limit)
            if heartbeat is not None:
                ends.append(beats.last + heartbeat)
            # The timer is re-armed whenever a heartbeat arrives (the Event), since the
            # next heartbeat deadline moved.
            timer = asyncio.ensure_future(clock.sleep(max(0.0, min(ends) - now)))
            beats._changed.clear()
            changed = asyncio.ensure_future(beats._changed.wait())
            try:
                done, _ = await asyncio.wait(
                    {task, timer, changed}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for pending in (timer, changed):
                    if not pending.done():
                        pending.cancel()
                await asyncio.gather(timer, changed, return_exceptions=True)
            if task in done:
                return task.result()
            now = clock.time()
            if limit is not None and now >= started + limit:
                check()
                raise TaskTimeout()
            if heartbeat is not None and now >= beats.last + heartbeat:
                raise HeartbeatTimeout()
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
