"""Property: a durable execution ends as the in-memory executor does, whatever the machine.

Random chains of Pass, Wait and Task states (Tasks that fail a few times and
are retried): run durably on the memory backend (advancing a FakeClock
through every timer) and in memory; the status, output and the sequence of
history event types agree, and every task call has its own idempotency key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import memory_backend
from reflow.flows import TaskContext, run
from reflow.flows.service import FlowService
from reflow.testing import FakeClock

STEP = st.one_of(
    st.tuples(st.just("pass"), st.integers(-5, 5)),
    st.tuples(st.just("wait"), st.integers(0, 90)),
    st.tuples(st.just("task"), st.integers(0, 3)),  # 3: fails past its retries
)


def machine(steps: list[tuple[str, int]]) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for index, (kind, value) in enumerate(steps):
        state: dict[str, Any]
        if kind == "pass":
            state = {"Type": "Pass", "Result": value, "ResultPath": f"$.p{index}"}
        elif kind == "wait":
            state = {"Type": "Wait", "Seconds": value}
        else:
            state = {
                "Type": "Task",
                "Resource": "flaky",
                "Parameters": {"fail": value, "key": f"t{index}", "in.$": "$"},
                "ResultPath": f"$.t{index}",
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 3, "MaxAttempts": 2}],
            }
        if index + 1 < len(steps):
            state["Next"] = f"S{index + 1}"
        else:
            state["End"] = True
        states[f"S{index}"] = state
    return {"StartAt": "S0", "States": states}


class Flaky:
    """Fails the first ``fail`` calls of each task key, then answers with the attempt."""

    def __init__(self) -> None:
        self.calls: list[TaskContext] = []

    def __call__(self, event: Any, context: TaskContext) -> Any:
        self.calls.append(context)
        if context.attempt < event["fail"]:
            raise RuntimeError(f"{event['key']} attempt {context.attempt}")
        return {"attempt": context.attempt}


async def durable(definition: dict[str, Any]) -> tuple[dict[str, Any], list[str], Flaky]:
    clock = FakeClock()
    backend = memory_backend(clock)
    flaky = Flaky()
    try:
        service = FlowService(backend, {"f": definition}, functions={"flaky": flaky})
        await service.start_execution("f", {"start": True}, name="x")
        for _ in range(100):
            await service.drain()
            described = await service.describe("x")
            if described["status"] != "RUNNING":
                break
            due = await service.store.next_timer()
            assert due is not None, "RUNNING with nothing to wait for"
            clock.set(max(clock.time(), due))
        types = [event["type"] for event in await service.history("x")]
        return described, types, flaky
    finally:
        await backend.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=8))
def test_durable_execution_matches_the_memory_executor(steps: list[tuple[str, int]]) -> None:
    definition = machine(steps)
    expected = run(
        definition, {"start": True}, functions={"flaky": Flaky()}, clock=FakeClock(autojump=True)
    )
    described, types, flaky = asyncio.run(durable(definition))
    assert (described["status"], described["output"]) == (expected.status, expected.output)
    assert types == expected.event_types()
    keys = [context.idempotency_key for context in flaky.calls]
    assert len(keys) == len(set(keys))
