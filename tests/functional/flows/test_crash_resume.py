"""A 20-state Standard flow survives SIGKILL at every transition.

For each transition index (1…20) and each side of its save (just before the
transaction, just after it), a forked process starts the execution and is
SIGKILLed — by itself, from the service's persist hook — at that point. A
second process then starts the same execution by name (idempotent: it gets
the existing one), recovers and runs it to the end. Afterwards:

* the execution SUCCEEDED with the output of an uninterrupted run;
* it finished exactly once (one ExecutionStarted, one ExecutionSucceeded,
  every state entered once);
* each task state was called with one idempotency key only (a redone
  transition calls its task again, but with the same key).

Run on SQLite and on Redis (a unique key prefix per test).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import multiprocessing
import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import open_backend
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from tests.functional.flows.crashing import backend_url, run_execution, run_to_exit

STATES = 20
INPUT = {"n": 0, "trail": []}


def twenty_states() -> dict[str, Any]:
    """Tasks at odd positions, Pass states at even ones, one Choice in the middle."""
    states: dict[str, Any] = {}
    for index in range(1, STATES + 1):
        name, after = f"S{index:02d}", f"S{index + 1:02d}"
        if index == 10:
            states[name] = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": after}],
                "Default": "Broken",
            }
        elif index % 2:
            states[name] = {"Type": "Task", "Resource": "bump", "Next": after}
        else:
            states[name] = {
                "Type": "Pass",
                "Parameters": {"n.$": "States.MathAdd($.n, 10)", "trail.$": "$.trail"},
                "Next": after,
            }
    states[f"S{STATES:02d}"] = {"Type": "Pass", "End": True}
    states["Broken"] = {"Type": "Fail", "Error": "Broken"}
    return {"StartAt": "S01", "States": states}


DEFINITION = twenty_states()


def bump(event: Any, context: TaskContext) -> Any:
    return {"n": event["n"] + 1, "trail": [*event["trail"], context.state_name]}


def recording(calls: Path) -> Any:
    def task(event: Any, context: TaskContext) -> Any:
        # One write() per call: it is in the file even if the process dies right after.
        with calls.open("a") as file:
            file.write(json.dumps([context.state_name, context.idempotency_key]) + "\n")
        return bump(event, context)

    return task


def child(url: str, data_dir: str, calls: str, name: str, crash: tuple[str, int] | None) -> None:
    """Start (or find) the execution and run it; SIGKILL itself at ``crash``."""

    # A hung child prints where it is stuck before the parent gives up on it.
    faulthandler.dump_traceback_later(45, exit=True)

    def hook(phase: str, execution: str, seq: int) -> None:
        if crash == (phase, seq):
            os.kill(os.getpid(), signal.SIGKILL)

    functions = {"bump": recording(Path(calls))}
    run_execution(
        url, data_dir, {"twenty": DEFINITION}, ("twenty", INPUT, name),
        functions=functions, on_persist=hook,
    )  # fmt: skip


# Children fork from a fork server that imported reflow once: fast, and unlike forking
# the test process itself, safe whatever threads earlier tests left running here.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def run_child(url: str, tmp_path: Path, calls: Path, name: str, crash: Any) -> int:
    arguments = (url, str(tmp_path), str(calls), name, crash)
    return run_to_exit(_CONTEXT, child, arguments, f"the child running {name}")


async def outcome(url: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], list[str]]:
    backend = await open_backend(url, data_dir=tmp_path)
    try:
        service = FlowService(backend, {"twenty": DEFINITION})
        described = await service.describe(name)
        types = [event["type"] for event in await service.history(name)]
        return described, types
    finally:
        await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, "test-flows-crash")


def test_sigkill_at_every_transition_resumes_to_the_same_single_outcome(
    url: str, tmp_path: Path
) -> None:
    expected = run(DEFINITION, INPUT, functions={"bump": bump})
    assert expected.status == "SUCCEEDED"
    tasks = {name for name, state in DEFINITION["States"].items() if state["Type"] == "Task"}
    for seq in range(1, STATES + 1):
        for phase in ("before", "after"):
            name = f"crash-{phase}-{seq}"
            calls = tmp_path / f"{name}.calls"
            assert run_child(url, tmp_path, calls, name, (phase, seq)) == -signal.SIGKILL
            assert run_child(url, tmp_path, calls, name, None) == 0
            described, types = asyncio.run(outcome(url, tmp_path, name))
            assert described["status"] == "SUCCEEDED", (name, described)
            assert described["output"] == expected.output, name
            assert types == expected.event_types(), name
            keys: dict[str, set[str]] = defaultdict(set)
            for line in calls.read_text().splitlines():
                state, key = json.loads(line)
                keys[state].add(key)
            assert set(keys) == tasks, name
            assert all(len(found) == 1 for found in keys.values()), (name, dict(keys))
