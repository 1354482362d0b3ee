"""Reserved concurrency: the gate's invariants under any interleaving."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.errors import ThrottledError
from reflow.functions.metrics import FunctionMetrics
from reflow.functions.pools import Gate

calls = st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 2)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), calls)
def test_the_gate_never_admits_more_than_reserved_and_loses_no_waiting_call(
    limit: int, plan: list[tuple[int, bool, int]]
) -> None:
    async def scenario() -> tuple[int, int, int, int]:
        metrics = FunctionMetrics("f")
        gate = Gate("f", limit, metrics)
        running = peak = done = 0

        async def call(hold: int, wait: bool) -> None:
            nonlocal running, peak, done
            await gate.enter(wait=wait)
            running += 1
            peak = max(peak, running)
            for _ in range(hold):
                await asyncio.sleep(0)
            running -= 1
            gate.leave()
            done += 1

        tasks = []
        for hold, wait, pause in plan:
            tasks.append(asyncio.create_task(call(hold, wait)))
            for _ in range(pause):
                await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        throttled = sum(isinstance(r, ThrottledError) for r in results)
        assert all(r is None or isinstance(r, ThrottledError) for r in results)
        return peak, done, throttled, gate.active

    peak, done, throttled, active = asyncio.run(scenario())
    assert peak <= limit
    assert done + throttled == len(plan)
    assert active == 0
    waiting_calls = sum(1 for _, wait, _ in plan if wait)
    assert done >= waiting_calls  # a call that may wait is never refused


def test_a_cancelled_waiter_hands_its_slot_on() -> None:
    async def scenario() -> int:
        gate = Gate("f", 1, FunctionMetrics("f"))
        await gate.enter(wait=False)
        first = asyncio.create_task(gate.enter(wait=True))
        second = asyncio.create_task(gate.enter(wait=True))
        await asyncio.sleep(0)
        gate.leave()  # the slot goes to `first`...
        first.cancel()  # ...which is cancelled before it runs: `second` gets it
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 1.0)
        gate.leave()
        return gate.active

    assert asyncio.run(scenario()) == 0
