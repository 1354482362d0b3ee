"""A durable Map whose iterations wait (a Wait state, parked) survives SIGKILL.

The flow: a Map over 5 items (MaxConcurrency 0) whose iteration is a Task
(``Before``), a Wait of 2 s — long enough to park: the worker is let go and
the parent's timer wakes it — and a Task (``After``). Every task call is
appended to a file (state, item, idempotency key, wall time) before it
returns. For each kill point a forked process starts the execution and is
SIGKILLed; a second one recovers it and runs it to the end. Kill points:

* just before the parent's save that parks it (the children's records, each
  saying when its Wait ends, are saved; the parent's is not);
* once it is parked (no worker holds it, nothing in flight);
* in the ``After`` task once two iterations have made it (mid-wake);
* just before the parent's save that leaves the Map (every iteration over).

Afterwards the execution SUCCEEDED once with the output of an uninterrupted
run, each ``Before`` ran once, each ``After`` ran with one key only and not
before its Wait had ended, five Waits were entered and exited in the history,
and the children's records are gone. Run on SQLite and on Redis (a unique key
prefix per test).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, open_backend
from reflow.flows import TaskContext
from reflow.flows.service import FlowService
from tests.functional.flows.crashing import backend_url, run_execution, run_to_exit

ITEMS = 5
WAIT = 2
INPUT = {"items": list(range(ITEMS))}
DEFINITION: dict[str, Any] = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {
                "StartAt": "Before",
                "States": {
                    "Before": {"Type": "Task", "Resource": "log", "Next": "Pause"},
                    "Pause": {"Type": "Wait", "Seconds": WAIT, "Next": "After"},
                    "After": {
                        "Type": "Task",
                        "Resource": "log",
                        "ResultSelector": {"item.$": "$.item", "done": True},
                        "End": True,
                    },
                },
            },
            "End": True,
        }
    },
}
# The parent's saves: seq 1 parks it (its first transition), seq 2 leaves the Map.
KILLS = [("before", 1), ("parked", 0), ("call", 2), ("before", 2)]


def calls_of(path: Path) -> list[tuple[str, int, str, float]]:
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]


def child(url: str, data_dir: str, calls: str, name: str, kill: tuple[str, int] | None) -> None:
    """Start (or find) the execution and run it; SIGKILL itself at ``kill``."""
    faulthandler.dump_traceback_later(45, exit=True)
    path = Path(calls)

    def log(event: Any, context: TaskContext) -> Any:
        state = context.idempotency_key.split("/")[-2].split("@")[0]
        item = event["item"] if isinstance(event, dict) else event  # After gets Before's
        made = sum(1 for c in calls_of(path) if c[0] == "After")
        if kill is not None and kill[0] == "call" and state == "After" and made == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        line = json.dumps([state, item, context.idempotency_key, time.time()])
        with path.open("a") as file:  # one write(): kept even if the process dies next
            file.write(line + "\n")
        return {"item": item}

    def hook(phase: str, execution: str, seq: int) -> None:
        if kill is not None and (phase, seq) == kill and execution == name:
            os.kill(os.getpid(), signal.SIGKILL)

    async def done(backend: Backend, described: dict[str, Any]) -> bool:
        if kill == ("parked", 0) and described["waiting_for"] == "children":
            os.kill(os.getpid(), signal.SIGKILL)
        # The children's records go right after the final save: let them.
        over = described["status"] != "RUNNING"
        return over and not await backend.kv.scan(f"flows/c/{name}/")

    run_execution(
        url, data_dir, {"fan": DEFINITION}, ("fan", INPUT, name),
        functions={"log": log}, on_persist=hook, done=done, polls=4000,
    )  # fmt: skip


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def run_child(url: str, tmp_path: Path, calls: Path, name: str, kill: Any) -> int:
    arguments = (url, str(tmp_path), str(calls), name, kill)
    return run_to_exit(_CONTEXT, child, arguments, f"the child running {name}")


async def outcome(url: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], list[str], int]:
    backend = await open_backend(url, data_dir=tmp_path)
    try:
        service = FlowService(backend, {"fan": DEFINITION})
        described = await service.describe(name)
        types = [event["type"] for event in await service.history(name)]
        left = len(await backend.kv.scan(f"flows/c/{name}/"))
        return described, types, left
    finally:
        await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, "test-flows-waits-crash")


def test_sigkill_while_iterations_are_parked_on_waits_finishes_once(
    url: str, tmp_path: Path
) -> None:
    expected = [{"item": item, "done": True} for item in range(ITEMS)]
    for kind, value in KILLS:
        name = f"waits-{kind}-{value}"
        calls = tmp_path / f"{name}.calls"
        assert run_child(url, tmp_path, calls, name, (kind, value)) == -signal.SIGKILL, name
        assert run_child(url, tmp_path, calls, name, None) == 0, name
        described, types, left = asyncio.run(outcome(url, tmp_path, name))
        assert described["status"] == "SUCCEEDED", (name, described)
        assert described["output"] == expected, name
        assert types.count("WaitStateEntered") == ITEMS, (name, types)
        assert types.count("WaitStateExited") == ITEMS, (name, types)
        assert types.count("MapStateEntered") == 1 and types.count("ExecutionSucceeded") == 1
        assert left == 0, name  # the children's records went with the Map state
        made = calls_of(calls)
        before = {item: (key, at) for state, item, key, at in made if state == "Before"}
        # Every Before call was saved before the first kill: none ran again.
        assert sorted(item for state, item, _, _ in made if state == "Before") == list(
            range(ITEMS)
        ), name
        after: dict[int, set[str]] = {}
        for state, item, key, at in made:
            if state == "After":
                after.setdefault(item, set()).add(key)
                # The Wait was honoured across the kill (file times are wall clock).
                assert at >= before[item][1] + WAIT - 0.05, (name, item)
        assert sorted(after) == list(range(ITEMS)), name
        assert all(len(keys) == 1 for keys in after.values()), (name, after)
        # Only After calls in flight at the kill ran twice (at most the two made).
        assert sum(1 for c in made if c[0] == "After") <= ITEMS + 2, name
