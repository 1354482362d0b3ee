"""Flows: an Amazon States Language engine (JSONPath and JSONata modes).

The front door::

    from reflow.flows import StateMachine, run

    execution = run(definition, {"id": 7}, functions={"render": render})
    execution.status, execution.output, execution.history

``run`` parses and validates the definition (raising
:class:`reflow.errors.InvalidDefinitionError` with every problem), then runs
it in memory; ``run_async`` is the same for code already inside an event
loop. :func:`parse` gives the validated :class:`StateMachine` alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.clock import Clock
from reflow.flows.executor import Execution, Executor
from reflow.flows.history import HistoryEvent
from reflow.flows.model import StateMachine
from reflow.flows.parse import parse
from reflow.flows.tasks import TaskContext, TaskFunction

__all__ = [
    "Execution",
    "HistoryEvent",
    "StateMachine",
    "TaskContext",
    "parse",
    "run",
    "run_async",
]

Definition = StateMachine | str | bytes | Mapping[str, Any]


def _machine(definition: Definition) -> StateMachine:
    return definition if isinstance(definition, StateMachine) else parse(definition)


async def run_async(
    definition: Definition,
    input: Any = None,
    *,
    functions: Mapping[str, TaskFunction] | None = None,
    clock: Clock | None = None,
    name: str | None = None,
    flows: Mapping[str, Definition] | None = None,
    blobs: Blobs | None = None,
    events: Any = None,
    tables: Mapping[str, Any] | None = None,
    cache: Any = None,
) -> Execution:
    """Run ``definition`` on ``input`` to the end, in this event loop.

    ``flows`` are the flows a ``states:startExecution`` Task may start, by
    name; ``blobs`` is where a Distributed Map's ItemReader reads and its
    ResultWriter writes (a bucket ``NAME`` is the key prefix ``NAME/``).
    ``events`` (an ``EventBus``), ``tables`` (table name to ``Table``) and
    ``cache`` (an ``EdgeService``, or anything with its ``purge``) serve the
    ``events:putEvents``, ``dynamodb:*`` and cache-purge integrations
    (:mod:`reflow.flows.integrations`).
    """
    machine = _machine(definition)
    machines = {key: _machine(flow) for key, flow in (flows or {}).items()}
    executor = Executor(
        machine,
        functions=functions,
        clock=clock,
        name=name,
        flows=machines,
        blobs=blobs,
        events=events,
        tables=tables,
        cache=cache,
    )
    return await executor.run({} if input is None else input)


def run(
    definition: Definition,
    input: Any = None,
    *,
    functions: Mapping[str, TaskFunction] | None = None,
    clock: Clock | None = None,
    name: str | None = None,
    flows: Mapping[str, Definition] | None = None,
    blobs: Blobs | None = None,
    events: Any = None,
    tables: Mapping[str, Any] | None = None,
    cache: Any = None,
) -> Execution:
    """Run ``definition`` on ``input`` to the end and return the :class:`Execution`.

    Called outside an event loop it runs one; called from inside a running
    loop (an async test, say) it runs the execution in a helper thread with a
    loop of its own and blocks until it ends, so prefer ``await
    run_async(...)`` there, especially with a FakeClock you advance by hand.
    """
    machine = _machine(definition)
    coroutine = run_async(
        machine,
        input,
        functions=functions,
        clock=clock,
        name=name,
        flows=flows,
        blobs=blobs,
        events=events,
        tables=tables,
        cache=cache,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reflow-flow") as pool:
        return pool.submit(asyncio.run, coroutine).result()
