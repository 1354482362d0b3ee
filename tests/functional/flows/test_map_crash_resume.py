"""A durable Map over 20 items survives SIGKILL mid-Map, resuming where it stood.

The flow: a Pass state, a Map over 20 items (MaxConcurrency 4) whose
iteration is a Pass state and a Task, then a Pass state. Every task call is
appended to a file (execution, item, idempotency key) before the task
returns. For each kill point a forked process starts the execution and is
SIGKILLed — by its own task function, when it is about to make call k+1
(so about k iterations have finished), or from the persist hook just before
the parent's save that leaves the Map state (every iteration finished). A
second process starts the same execution by name (idempotent), recovers and
runs it to the end. Afterwards:

* the execution SUCCEEDED once, with the output and the history event types
  of an uninterrupted run;
* every item's task ran with one idempotency key only, and the keys of
  different items differ (a task in flight at the kill may run again, with
  its key: at-least-once);
* only tasks in flight at the kill ran twice: at most 20 + 4 calls.

The same for a Distributed Map (each item a child execution of one Map Run,
whose id must survive the kill). Run on SQLite and on Redis (a unique key
prefix per test).
"""

from __future__ import annotations

import asyncio
import copy
import faulthandler
import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import open_backend
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from tests.functional.flows.crashing import backend_url, run_execution, run_to_exit

ITEMS = 20
CONCURRENCY = 4
INPUT = {"items": list(range(ITEMS))}
DEFINITION: dict[str, Any] = {
    "StartAt": "Prepare",
    "States": {
        "Prepare": {"Type": "Pass", "Parameters": {"items.$": "$.items"}, "Next": "Fan"},
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": CONCURRENCY,
            "ItemProcessor": {
                "StartAt": "Shape",
                "States": {
                    "Shape": {"Type": "Pass", "Parameters": {"item.$": "$"}, "Next": "Square"},
                    "Square": {"Type": "Task", "Resource": "square", "End": True},
                },
            },
            "ResultPath": "$.squares",
            "Next": "Done",
        },
        "Done": {"Type": "Pass", "OutputPath": "$.squares", "End": True},
    },
}
# (kind, value): ("call", k) dies when about to make task call k+1; ("before", seq)
# dies just before the parent's save of transition seq (2: the one leaving the Map).
KILLS = {
    "inline": [("call", 0), ("call", 7), ("call", 15), ("call", 19), ("before", 2)],
    "distributed": [("call", 9), ("before", 2)],
}


def definition(mode: str) -> dict[str, Any]:
    """The flow with an inline Map, or with the same Map in DISTRIBUTED mode."""
    if mode == "inline":
        return DEFINITION
    distributed = copy.deepcopy(DEFINITION)
    processor = distributed["States"]["Fan"]["ItemProcessor"]
    processor["ProcessorConfig"] = {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    return distributed


def square(event: Any, context: TaskContext) -> Any:
    return {"item": event["item"], "square": event["item"] ** 2}


def recording(calls: Path, die_at_call: int | None) -> Any:
    def task(event: Any, context: TaskContext) -> Any:
        if die_at_call is not None:
            made = len(calls.read_text().splitlines()) if calls.exists() else 0
            if made == die_at_call:
                os.kill(os.getpid(), signal.SIGKILL)
        line = json.dumps([context.execution_id, event["item"], context.idempotency_key])
        # One write() per call: it is in the file even if the process dies right after.
        with calls.open("a") as file:
            file.write(line + "\n")
        return square(event, context)

    return task


def child(
    url: str, data_dir: str, calls: str, name: str, kill: tuple[str, int] | None, mode: str
) -> None:
    """Start (or find) the execution and run it; SIGKILL itself at ``kill``."""
    faulthandler.dump_traceback_later(45, exit=True)
    die_at_call = kill[1] if kill is not None and kill[0] == "call" else None

    def hook(phase: str, execution: str, seq: int) -> None:
        if kill is not None and (phase, seq) == kill and execution == name:
            os.kill(os.getpid(), signal.SIGKILL)

    functions = {"square": recording(Path(calls), die_at_call)}
    run_execution(
        url, data_dir, {"fan": definition(mode)}, ("fan", INPUT, name),
        functions=functions, on_persist=hook, polls=4000,
    )  # fmt: skip


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def run_child(url: str, tmp_path: Path, calls: Path, name: str, kill: Any, mode: str) -> int:
    arguments = (url, str(tmp_path), str(calls), name, kill, mode)
    return run_to_exit(_CONTEXT, child, arguments, f"the child running {name}")


async def outcome(
    url: str, tmp_path: Path, name: str, mode: str
) -> tuple[dict[str, Any], list[str], int]:
    backend = await open_backend(url, data_dir=tmp_path)
    try:
        service = FlowService(backend, {"fan": definition(mode)})
        described = await service.describe(name)
        types = [event["type"] for event in await service.history(name)]
        left = len(await backend.kv.scan(f"flows/c/{name}/"))
        return described, types, left
    finally:
        await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, "test-flows-map-crash")


@pytest.mark.parametrize("mode", ["inline", "distributed"])
def test_sigkill_mid_map_resumes_without_running_finished_iterations_again(
    url: str, tmp_path: Path, mode: str
) -> None:
    expected = run(definition(mode), INPUT, functions={"square": square})
    assert expected.status == "SUCCEEDED"
    for kind, value in KILLS[mode]:
        name = f"map-{mode}-{kind}-{value}"
        calls = tmp_path / f"{name}.calls"
        assert run_child(url, tmp_path, calls, name, (kind, value), mode) == -signal.SIGKILL
        before = len(calls.read_text().splitlines()) if calls.exists() else 0
        if kind == "call":
            assert before == value, name  # it died where it was told to
        assert run_child(url, tmp_path, calls, name, None, mode) == 0, name
        described, types, left = asyncio.run(outcome(url, tmp_path, name, mode))
        assert described["status"] == "SUCCEEDED", (name, described)
        assert described["output"] == expected.output, name
        assert types == expected.event_types(), name
        assert left == 0, name  # the children's records went with the Map state
        keys: dict[int, set[str]] = {}
        executions: set[str] = set()
        for line in calls.read_text().splitlines():
            execution, item, key = json.loads(line)
            executions.add(execution)
            keys.setdefault(item, set()).add(key)
        if mode == "inline":  # the parent's execution id, then /Fan@VISIT.RETRY/POSITION
            assert {execution.split("/")[0] for execution in executions} == {
                f"arn:aws:states:local:000000000000:execution:fan:{name}"
            }
        else:  # child executions of one Map Run: ...:execution:fan/Fan:RUN_ID:INDEX
            assert len({execution.rsplit(":", 1)[0] for execution in executions}) == 1
        assert sorted(keys) == list(range(ITEMS)), name
        assert all(len(found) == 1 for found in keys.values()), (name, keys)
        assert len({key for found in keys.values() for key in found}) == ITEMS, name
        total = len(calls.read_text().splitlines())
        assert total <= ITEMS + CONCURRENCY, (name, total)
        if kind == "before":
            assert total == ITEMS, name  # every iteration was saved: none ran again
