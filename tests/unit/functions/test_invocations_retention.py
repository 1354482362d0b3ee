"""Retention of ``functions.<name>.events``: acknowledged invocations are trimmed.

A runtime's readers trim every function's stream up to what is provably
acknowledged, ``keep_acked`` seconds older still; an invocation still held
(pending) is never dropped. Virtual time on a FakeClock without autojump.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reflow import App, Context
from reflow.backends import Backend, memory_backend
from reflow.backends.retention import AckedTrimmer
from reflow.functions import Runtime, events_stream
from reflow.functions.invocations import GROUP
from reflow.testing.clock import FakeClock

app = App("retained", root=".")
done: list[Any] = []
KEEP, EVERY, RATE = 30.0, 10.0, 4


@app.function
async def quick(event: Any, context: Context) -> Any:
    """Note the event."""
    done.append(event)
    return event


async def until_done(count: int) -> None:
    """Wait (in real time) until ``count`` invocations ran."""
    for _ in range(2000):
        if len(done) >= count:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the runtime did not get there")


async def run(runtime: Runtime, backend: Backend, clock: FakeClock, rounds: int) -> int:
    """Queue RATE invocations a virtual second; return the longest the stream got."""
    stream, longest = events_stream("quick"), 0
    first = len(done)
    for second in range(rounds):
        for index in range(RATE):
            await runtime.invoke_async("quick", {"n": second * RATE + index})
        await until_done(first + (second + 1) * RATE)
        for _ in range(500):  # acknowledged just after the function returns
            if len(await backend.log.pending(stream, GROUP)) <= 1:
                break
            await asyncio.sleep(0.002)
        clock.advance(1.0)
        await asyncio.sleep(0.06)  # the reader's read returns; it trims when due
        longest = max(longest, await backend.log.length(stream))
    return longest


async def started(clock: FakeClock, backend: Backend) -> Runtime:
    runtime = Runtime(app, backend=backend)
    await runtime.start()
    assert runtime.invocations is not None
    runtime.invocations.trimmer = AckedTrimmer(backend.log, clock, keep=KEEP, every=EVERY)
    return runtime


async def test_event_stream_stays_bounded() -> None:
    done.clear()
    clock = FakeClock(1_700_000_000.0)
    runtime = await started(clock, memory_backend(clock))
    assert runtime.backend is not None
    try:
        longest = await run(runtime, runtime.backend, clock, 150)
        assert longest <= RATE * (KEEP + EVERY + 2)
        assert runtime.invocations is not None
        assert runtime.invocations.trimmer.trimmed >= 150 * RATE - RATE * (KEEP + EVERY + 2)
    finally:
        await runtime.stop()


async def test_a_held_invocation_is_never_trimmed() -> None:
    done.clear()
    clock = FakeClock(1_700_000_000.0)
    backend, stream = memory_backend(clock), events_stream("quick")
    runtime = await started(clock, backend)
    try:
        # One invocation another runtime took and still runs (a long lease).
        await backend.log.append(stream, b"{}")
        (held,) = await backend.log.read(stream, GROUP, "elsewhere", count=1, lease=1e6)
        assert await run(runtime, backend, clock, 100) == 100 * RATE + 1  # it and all after it stay
        assert held.id in [entry.id for entry in await backend.log.range(stream)]
        await backend.log.ack(stream, GROUP, [held.id])
        for _ in range(3):
            clock.advance(EVERY)
            await asyncio.sleep(0.1)
        assert held.id not in [entry.id for entry in await backend.log.range(stream)]
        assert await backend.log.length(stream) <= RATE * (KEEP + 2)
    finally:
        await runtime.stop()
