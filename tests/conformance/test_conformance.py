"""The data-driven ASL conformance suite.

Each file in ``cases/`` holds a list of cases written from the AWS Step
Functions documentation (the ``doc`` field names the page a case follows).
A case runs ``definition`` on ``input`` with a fixed set of task functions and
a FakeClock at 2023-11-14T22:13:20Z (autojump: every sleep, and so every
timeout, ends at once), and expects either an outcome
(``status`` and ``output``, or ``error`` and optionally ``cause``) or, with
``invalid``, the JSON paths of the problems validation must report.
A case may also give ``objects`` (blob key ``BUCKET/KEY`` to its text, or
to a JSON value stored as JSON) for a Distributed Map's ItemReader, and
``flows`` (name to definition) for ``states:startExecution`` tasks,
``tables`` (name to ``{"key", "sort_key", "items"}``) for the DynamoDB
integration, and ``events: true`` for an event bus the putEvents integration
puts on (both over a memory backend).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.backends.memory import MemoryBlobs
from reflow.errors import InvalidDefinitionError
from reflow.events.bus import EventBus
from reflow.flows import TaskContext, parse, run
from reflow.state.tables import Table
from reflow.testing import FakeClock

CASES_DIR = Path(__file__).parent / "cases"
START = 1_700_000_000.0


def _load() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for case in json.loads(path.read_text()):
            params.append(pytest.param(case, id=f"{path.stem}::{case['name']}"))
    return params


CASES = _load()


async def _hang(event: Any, context: TaskContext) -> Any:
    # Never finishes: only a TimeoutSeconds (raced on the FakeClock) ends it.
    await asyncio.Event().wait()


def _raise(event: Any, context: TaskContext) -> Any:
    error = type(str(event.get("error", "CustomError")), (Exception,), {})
    raise error(event.get("cause", ""))


def _functions() -> dict[str, Callable[[Any, TaskContext], Any]]:
    calls: dict[str, int] = {}

    def flaky(event: Any, context: TaskContext) -> Any:
        # Fails with "Flaky" for the first event["failures"] calls of this execution.
        calls["flaky"] = calls.get("flaky", 0) + 1
        if calls["flaky"] <= int(event.get("failures", 0)):
            raise type("Flaky", (Exception,), {})(f"call {calls['flaky']}")
        return {"calls": calls["flaky"]}

    return {
        "echo": lambda event, context: event,
        "add": lambda event, context: event["a"] + event["b"],
        "double": lambda event, context: event * 2,
        "upper": lambda event, context: event.upper(),
        "length": lambda event, context: len(event),
        "attempt": lambda event, context: context.attempt,
        "raise": _raise,
        "flaky": flaky,
        "hang": _hang,
    }


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict[str, Any]) -> None:
    if "invalid" in case:
        with pytest.raises(InvalidDefinitionError) as caught:
            parse(case["definition"])
        assert sorted({path for path, _ in caught.value.problems}) == sorted(case["invalid"])
        return
    clock = FakeClock(start=START, autojump=True)
    blobs = MemoryBlobs(clock)
    for key, value in case.get("objects", {}).items():
        data = value if isinstance(value, str) else json.dumps(value)
        asyncio.run(blobs.put(key, data.encode()))
    backend = memory_backend(clock)
    tables = {}
    for table_name, spec in case.get("tables", {}).items():
        table = Table(
            table_name, backend.kv, key=spec["key"], sort_key=spec.get("sort_key"), clock=clock
        )
        for item in spec.get("items", []):
            asyncio.run(table.put(item))
        tables[table_name] = table
    execution = run(
        case["definition"],
        case.get("input", {}),
        functions=_functions(),
        clock=clock,
        name="conformance",
        flows=case.get("flows"),
        blobs=blobs,
        tables=tables if "tables" in case else None,
        events=EventBus(backend, clock=clock) if case.get("events") else None,
    )
    expect = case["expect"]
    assert (execution.status, execution.error, execution.cause) == (
        expect.get("status", "SUCCEEDED" if "error" not in expect else "FAILED"),
        expect.get("error"),
        expect.get("cause", execution.cause if "error" in expect else None),
    )
    if "output" in expect:
        assert execution.output == expect["output"]
    if "elapsed" in expect:
        assert clock.time() - START == pytest.approx(expect["elapsed"])
