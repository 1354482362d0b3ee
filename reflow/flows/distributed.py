"""Running a Distributed Map: read the items, one child execution per item or batch, write.

The executor hands a Map action carrying a
:class:`~reflow.flows.actions.Distributed` to :func:`run_map_run`. It reads
the items (:mod:`reflow.flows.items`), has :func:`reflow.flows.mapping.expand`
make the children, and runs each as a child *execution* (an
:class:`~reflow.flows.executor.Executor` of its own, named
``MAP_RUN_ID:INDEX``, with its own ``$$.Execution`` and no access to the
parent's variables), at most ``MaxConcurrency`` at once. Failures count
against ``ToleratedFailureCount``/``Percentage`` (zero unless set: then
any failed child fails the state with
``States.ExceedToleratedFailureThreshold``). With a ResultWriter the child
executions' descriptions go to the bucket (also when the Map Run fails)
and on success the state's result is the manifest's location; without one
it is the array of child outputs, as for an inline Map. A ResultWriter with
only a ``WriterConfig`` writes nothing; the result is then the children as
its ``Transformation`` lists them (:func:`reflow.flows.items.transform`).

In ``run`` the children run in memory. The durable service passes
``runs`` (see :mod:`reflow.flows.iterations`): the Map Run id is then derived
from the Map state's visit, and each child keeps its progress in a record of
its own, so after a crash the Map Run resumes where it stood — finished
children are not run again. ``ExecutionType`` EXPRESS and STANDARD behave the
same here.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

from reflow.flows import items as item_io
from reflow.flows import mapping
from reflow.flows.actions import Branches, Child, Failure, Outcome, Result
from reflow.flows.errors import StatesError
from reflow.flows.history import History, iso_time

if TYPE_CHECKING:
    from reflow.flows.branches import ChildRuns
    from reflow.flows.executor import Executor
    from reflow.flows.nested import Finished

__all__ = ["run_map_run"]


async def run_map_run(
    executor: Executor,
    action: Branches,
    history: History,
    state_name: str,
    runs: ChildRuns | None = None,
) -> Outcome:
    """Run the Distributed Map ``action`` of state ``state_name`` to its outcome."""
    from reflow.flows.executor import Executor

    source = action.distributed
    assert source is not None
    clock = executor.clock
    try:
        if source.reader is not None:
            found = await item_io.read_items(executor.blobs, source.reader)
        else:
            found = list(source.items or [])
        action = mapping.expand(action, found)
    except StatesError as error:
        history.add("MapStateFailed", clock.time(), name=state_name, error=error.name)
        return Failure(error.name, error.cause)
    run_id = runs.run_id if runs is not None else str(uuid.uuid4())
    map_run_arn = (
        f"arn:aws:states:local:000000000000:mapRun:{executor.machine_name}/{state_name}:{run_id}"
    )
    if runs is not None:
        runs.expect(len(action.children), action.max_concurrency or 0)
    history.add("MapStateStarted", clock.time(), name=state_name, length=len(action.children))
    history.add("MapRunStarted", clock.time(), name=state_name, mapRunArn=map_run_arn)
    gate = asyncio.Semaphore(action.max_concurrency) if action.max_concurrency else None
    processor_name = f"{executor.machine_name}/{state_name}"

    async def one(index: int) -> Finished:
        child = action.children[index]
        runner = Executor(
            child.machine,
            functions=executor.functions,
            clock=clock,
            name=f"{run_id}:{index}",
            machine_name=processor_name,
            flows=executor.flows,
            blobs=executor.blobs,
        )
        if gate is None:
            return await _run(runner, index, child, runs)
        async with gate:
            return await _run(runner, index, child, runs)

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(action.children))]
    try:
        executions = list(await asyncio.gather(*tasks))
    except BaseException:
        # A durable child fenced off (or the transition cancelled): stop the others too.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    outcomes: list[Outcome] = [
        Result(e.output) if e.status == "SUCCEEDED" else Failure(e.error or "", e.cause or "")
        for e in executions
    ]
    outcome = mapping.gather(action, outcomes)
    if source.writer is not None and not source.writer.get("Resource"):
        # Only a WriterConfig: nothing is written, the result is the transformed list.
        if isinstance(outcome, Result):
            entries = [_describe(e, processor_name) for e in executions]
            config = source.writer.get("WriterConfig") or {}
            outcome = Result(item_io.transform(entries, config.get("Transformation", "NONE")))
    elif source.writer is not None:
        # Written whether the Map Run succeeded or not: the FAILED file is how one
        # finds out which children failed.
        entries = [_describe(e, processor_name) for e in executions]
        try:
            written = await item_io.write_results(
                executor.blobs, source.writer, map_run_arn, entries
            )
        except StatesError as error:
            outcome = Failure(error.name, error.cause)
        else:
            if isinstance(outcome, Result):
                outcome = Result(written)
    if isinstance(outcome, Result):
        history.add("MapRunSucceeded", clock.time(), name=state_name)
        history.add("MapStateSucceeded", clock.time(), name=state_name)
    else:
        history.add(
            "MapRunFailed", clock.time(), name=state_name, error=outcome.error, cause=outcome.cause
        )
        history.add(
            "MapStateFailed",
            clock.time(),
            name=state_name,
            error=outcome.error,
            cause=outcome.cause,
        )
    return outcome


async def _run(runner: Executor, index: int, child: Child, runs: ChildRuns | None) -> Finished:
    if runs is None:
        return await runner.run(child.input)
    return await runs.execution(index, runner, child)


def _describe(execution: Finished, machine_name: str) -> dict[str, Any]:
    """A child execution as the ResultWriter's files list it (JSON text for data)."""
    entry: dict[str, Any] = {
        "ExecutionArn": execution.id,
        "Input": json.dumps(execution.input, separators=(",", ":")),
        "InputDetails": {"Included": True},
        "Name": execution.name,
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE",
        "StartDate": iso_time(execution.start_time),
        "StateMachineArn": f"arn:aws:states:local:000000000000:stateMachine:{machine_name}",
        "Status": execution.status,
        "StopDate": iso_time(execution.stop_time or execution.start_time),
    }
    if execution.status == "SUCCEEDED":
        entry["Output"] = json.dumps(execution.output, separators=(",", ":"))
        entry["OutputDetails"] = {"Included": True}
    else:
        entry["Error"] = execution.error
        entry["Cause"] = execution.cause
    return entry
