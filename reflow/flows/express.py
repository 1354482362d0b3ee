"""Express executions in the server: in memory, at-least-once, gone with the process.

:class:`ExpressRuns` runs an ``EXPRESS`` flow's executions with the
in-memory executor as background tasks of the service and keeps the newest
``keep`` of them so ``describe``, ``list`` and ``history`` can answer. As in
Step Functions, they cannot be stopped or redriven, and a crash loses them
(the caller starts them again: at-least-once).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.clock import Clock
from reflow.errors import ExecutionAlreadyExistsError
from reflow.flows.durable import execution_arn
from reflow.flows.executor import Execution, Executor
from reflow.flows.model import StateMachine
from reflow.flows.tasks import TaskFunction

__all__ = ["ExpressRuns"]


@dataclass
class _Run:
    flow: str
    name: str
    input: Any
    start_time: float
    task: asyncio.Task[Execution]

    def finished(self) -> Execution | None:
        if not self.task.done() or self.task.cancelled():
            return None
        return self.task.result() if self.task.exception() is None else None

    def summary(self) -> dict[str, Any]:
        done = self.finished()
        return {
            "name": self.name,
            "flow": self.flow,
            "status": done.status if done is not None else "RUNNING",
            "start_time": self.start_time,
            "stop_time": done.stop_time if done is not None else None,
        }

    def describe(self) -> dict[str, Any]:
        done = self.finished()
        return {
            **self.summary(),
            "id": execution_arn(self.flow, self.name),
            "input": self.input,
            "output": done.output if done is not None else None,
            "error": done.error if done is not None else None,
            "cause": done.cause if done is not None else None,
            "state": None,
            "waiting_for": None,
            "redrive_count": 0,
            "transitions": None,
            "kind": "EXPRESS",
        }

    def history(self) -> list[dict[str, Any]]:
        done = self.finished()
        if done is None:
            return []
        return [
            {
                "id": event.id,
                "previous_event_id": event.previous_event_id,
                "type": event.type,
                "timestamp": event.timestamp,
                "details": dict(event.details),
            }
            for event in done.history
        ]


class ExpressRuns:
    """The running and recently finished Express executions of one service."""

    def __init__(
        self,
        clock: Clock,
        keep: int = 1000,
        *,
        flows: Mapping[str, StateMachine] | None = None,
        blobs: Blobs | None = None,
    ) -> None:
        self.flows = flows
        self.blobs = blobs
        self.clock = clock
        self.keep = keep
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    def get(self, name: str) -> _Run | None:
        """The run of that name, if this process has it."""
        return self._runs.get(name)

    def start(
        self,
        flow: str,
        machine: StateMachine,
        input: Any,
        name: str,
        functions: Mapping[str, TaskFunction],
    ) -> dict[str, Any]:
        """Start one in the background (same name, flow and input while running: that one)."""
        existing = self._runs.get(name)
        if existing is not None:
            if existing.flow == flow and existing.input == input and not existing.task.done():
                return existing.describe()
            raise ExecutionAlreadyExistsError(name)
        executor = Executor(
            machine,
            functions=functions,
            clock=self.clock,
            name=name,
            machine_name=flow,
            flows=self.flows,
            blobs=self.blobs,
        )
        task = asyncio.create_task(executor.run(input), name=f"express-{name}")
        run = _Run(flow, name, input, self.clock.time(), task)
        self._runs[name] = run
        while len(self._runs) > self.keep:
            oldest = next(iter(self._runs.values()))
            if not oldest.task.done():
                break  # never forget a running one
            self._runs.popitem(last=False)
        return run.describe()

    def summaries(self) -> list[dict[str, Any]]:
        """Every run kept, in name order."""
        return [self._runs[name].summary() for name in sorted(self._runs)]

    async def stop(self) -> None:
        """Cancel the running ones (they are lost, as a crash would lose them)."""
        tasks = [run.task for run in self._runs.values() if not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
