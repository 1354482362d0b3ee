"""The async-invocation readers stop at once even when a Log call loses their cancellation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from reflow import App, Context
from reflow.backends import memory_backend
from reflow.functions import Runtime
from reflow.testing.clock import FakeClock

app = App("lost-cancel", root=".")


@app.function
async def noop(event: Any, context: Context) -> None:
    """Never invoked: the test only starts and stops the readers."""


async def test_a_reader_whose_read_swallows_its_cancellation_stops_on_the_first() -> None:
    backend = memory_backend(FakeClock())
    real_read = backend.log.read
    swallowed: list[bool] = []

    async def read(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real_read(*args, **kwargs)
        except asyncio.CancelledError:
            if swallowed:  # only the first: a failing run must still end
                raise
            swallowed.append(True)  # as redis-py's wait_for on 3.11 can
            return []

    backend.log.read = read  # type: ignore[method-assign]
    runtime = Runtime(app, backend=backend)
    await runtime.start()
    assert runtime.invocations is not None
    (reader,) = runtime.invocations._readers
    await asyncio.sleep(0.05)  # parked in its read
    started = time.perf_counter()
    async with asyncio.timeout(5):
        await runtime.stop()
    took = time.perf_counter() - started
    assert swallowed == [True]
    assert reader.cancelled()
    # Under 0.5 s: the first cancellation did it, not stop()'s second round.
    assert took < 0.45, took
