"""SIGKILL while pure transitions are computed ahead of the save in flight.

A 200-state flow — Pass states, a Choice, and a Task every 50 states —
runs as a Standard execution; its Pass/Choice transitions are saved
write-behind (see reflow.flows.writebehind), so several of them go out as one
merged write while the runner computes the next ones. A forked process is
SIGKILLed by its persist hook at fixed transitions (just before a save is
issued, just after it is durable) and, more to the point, in the middle of a
merged write: at the second transition of a write covering several (before
it is issued), and after a merged write landed (with more transitions
computed in memory). A second process then runs the same execution to the
end. Afterwards:

* it SUCCEEDED with the output of an uninterrupted run, exactly once;
* its history is that run's (every state entered once), event ids 1, 2, 3 …;
* each Task was called with one idempotency key, and the same input each time.

Run on SQLite and on Redis (a unique key prefix per test).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import multiprocessing
import os
import signal
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import open_backend
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from tests.functional.flows.crashing import backend_url, run_execution, run_to_exit

STATES = 200
INPUT = {"n": 0, "trail": []}
# Where the hook kills: ("fixed", phase, seq) at that save, or ("merged", phase, seq) at
# the first save from seq on that is part of a write covering several transitions.
FIXED = (2, 30, 49, 51, 99, 120, 175, 199)
MERGED_FROM = (1, 52, 101, 151)


def long_flow() -> dict[str, Any]:
    """Pass states counting up, a Choice at 75, a Task at every 50th state (S200 too)."""
    states: dict[str, Any] = {}
    for index in range(1, STATES + 1):
        name, after = f"S{index:03d}", f"S{index + 1:03d}"
        state: dict[str, Any]
        if index % 50 == 0:
            state = {"Type": "Task", "Resource": "bump"}
        elif index == 75:
            state = {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": after}],
                "Default": "Broken",
            }
        else:
            state = {
                "Type": "Pass",
                "Parameters": {"n.$": "States.MathAdd($.n, 1)", "trail.$": "$.trail"},
            }
        if index == STATES:
            state["End"] = True
        elif state["Type"] != "Choice":
            state["Next"] = after
        states[name] = state
    states["Broken"] = {"Type": "Fail", "Error": "Broken"}
    return {"StartAt": "S001", "States": states}


DEFINITION = long_flow()


def bump(event: Any, context: TaskContext) -> Any:
    return {"n": event["n"] + 1000, "trail": [*event["trail"], context.state_name]}


def recording(calls: Path) -> Any:
    def task(event: Any, context: TaskContext) -> Any:
        # One write() per call: it is in the file even if the process dies right after.
        with calls.open("a") as file:
            file.write(json.dumps([context.state_name, context.idempotency_key, event]) + "\n")
        return bump(event, context)

    return task


def child(
    url: str, data_dir: str, calls: str, name: str, crash: tuple[str, str, int] | None
) -> None:
    """Start (or find) the execution and run it; SIGKILL itself at ``crash``."""

    # A hung child prints where it is stuck before the parent gives up on it.
    faulthandler.dump_traceback_later(45, exit=True)
    previous = [("", 0)]

    def hook(phase: str, execution: str, seq: int) -> None:
        last_phase, last_seq = previous[0]
        previous[0] = (phase, seq)
        if crash is None:
            return
        how, at_phase, at_seq = crash
        if phase != at_phase or seq < at_seq:
            return
        # Consecutive calls of one phase for consecutive transitions: one merged write.
        merged = last_phase == phase and last_seq == seq - 1
        if how == "fixed" and seq == at_seq or how == "merged" and merged:
            os.kill(os.getpid(), signal.SIGKILL)

    functions = {"bump": recording(Path(calls))}
    run_execution(
        url, data_dir, {"long": DEFINITION}, ("long", INPUT, name),
        functions=functions, on_persist=hook,
    )  # fmt: skip


# Children fork from a fork server that imported reflow once (see test_crash_resume).
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def run_child(url: str, tmp_path: Path, calls: Path, name: str, crash: Any) -> int:
    arguments = (url, str(tmp_path), str(calls), name, crash)
    return run_to_exit(_CONTEXT, child, arguments, f"the child running {name}")


async def outcome(url: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], list[Any]]:
    backend = await open_backend(url, data_dir=tmp_path)
    try:
        service = FlowService(backend, {"long": DEFINITION})
        return await service.describe(name), await service.history(name)
    finally:
        await backend.close()


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path, "test-flows-writebehind")


def crash_points() -> list[tuple[str, str, int]]:
    points = [("fixed", phase, seq) for seq in FIXED for phase in ("before", "after")]
    points += [("merged", phase, seq) for seq in MERGED_FROM for phase in ("before", "after")]
    return points


def test_sigkill_amid_write_behind_resumes_to_the_same_single_outcome(
    url: str, tmp_path: Path
) -> None:
    expected = run(DEFINITION, INPUT, functions={"bump": bump})
    assert expected.status == "SUCCEEDED"
    tasks = {name for name, state in DEFINITION["States"].items() if state["Type"] == "Task"}
    for how, phase, seq in crash_points():
        name = f"crash-{how}-{phase}-{seq}"
        calls = tmp_path / f"{name}.calls"
        killed = run_child(url, tmp_path, calls, name, (how, phase, seq))
        assert killed == -signal.SIGKILL, (name, "the crash point was never reached")
        assert run_child(url, tmp_path, calls, name, None) == 0
        described, history = asyncio.run(outcome(url, tmp_path, name))
        assert described["status"] == "SUCCEEDED", (name, described)
        assert described["output"] == expected.output, name
        assert [event["type"] for event in history] == expected.event_types(), name
        assert [event["id"] for event in history] == list(range(1, len(history) + 1)), name
        entered = Counter(
            event["details"]["name"] for event in history if event["type"].endswith("Entered")
        )
        assert set(entered.values()) == {1} and len(entered) == STATES, name
        keys: dict[str, set[str]] = defaultdict(set)
        inputs: dict[str, list[Any]] = defaultdict(list)
        for line in calls.read_text().splitlines():
            state, key, event = json.loads(line)
            keys[state].add(key)
            inputs[state].append(event)
        assert set(keys) == tasks, name
        assert all(len(found) == 1 for found in keys.values()), (name, dict(keys))
        assert all(event == seen[0] for seen in inputs.values() for event in seen), name
