"""A worker SIGKILLed in the middle of an event invocation: retried elsewhere, nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from reflow.backends import memory_backend
from reflow.functions import Runtime, dead_letters
from reflow.functions.invocations import Destination
from reflow.functions.pools import ProcessPool
from reflow.testing.clock import FakeClock
from tests.functional.functions.sample_app import app


async def test_sigkilled_worker_mid_event_is_retried_on_another_worker(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    marker = tmp_path / "first-attempt"
    marker.touch()
    done = Destination("flow", "done").stream
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("once_slow", {"marker": str(marker), "hold": 30})
        pool = runtime.pool("once_slow")
        assert isinstance(pool, ProcessPool)
        for _ in range(500):  # until the first attempt is running in a worker
            if not marker.exists() and pool.workers == 1 and pool.idle == 0:
                break
            await asyncio.sleep(0.01)
        (busy,) = pool._workers
        killed = busy.pid
        os.kill(killed, signal.SIGKILL)
        records = []
        for _ in range(500):
            records = await backend.log.range(done)
            if records:
                break
            if clock.sleepers > 2:  # beyond the janitor and the metrics publisher: a back-off
                clock.advance(60)
            await asyncio.sleep(0.01)
        assert len(records) == 1
        outcome = json.loads(records[0].data)
        assert outcome["requestContext"]["condition"] == "Success"
        assert outcome["requestContext"]["approximateInvokeCount"] == 2
        assert outcome["responsePayload"] != killed
        assert outcome["requestPayload"]["marker"] == str(marker)
        metrics = runtime.metrics["once_slow"]
        assert (metrics.crashes, metrics.async_retries, metrics.dead_letters) == (1, 1, 0)
        assert await dead_letters(backend.log, "once_slow") == []
        assert await backend.log.pending("functions.once_slow.events", "functions") == []


async def drain_to_dlq(runtime: Runtime, clock: FakeClock, name: str) -> None:
    for _ in range(1500):
        if runtime.metrics[name].dead_letters:
            return
        if clock.sleepers > 2:
            clock.advance(60)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached the dead-letter queue")


async def test_an_event_that_times_out_every_time_is_retried_then_dead_lettered() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("sleepy", {"seconds": 30})
        await drain_to_dlq(runtime, clock, "sleepy")
        (letter,) = await dead_letters(backend.log, "sleepy")
        metrics = runtime.metrics["sleepy"]
        assert (metrics.timeouts, metrics.async_retries) == (3, 2)
    assert letter["attempts"] == 3
    assert letter["error"]["errorType"] == "Sandbox.Timedout"
    assert letter["error"]["errorMessage"] == "Task timed out after 0.50 seconds"
    assert letter["payload"] == {"seconds": 30}


async def test_an_event_whose_worker_exits_every_time_is_dead_lettered_as_exit_error() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    async with Runtime(app, backend=backend) as runtime:
        await runtime.invoke_async("misbehave", {"how": "exit"})
        await drain_to_dlq(runtime, clock, "misbehave")
        (letter,) = await dead_letters(backend.log, "misbehave")
        assert runtime.metrics["misbehave"].crashes == 3
        # And the function still works for the next event, on a fresh worker.
        assert "pid" in await runtime.invoke("misbehave", {})
    assert letter["error"]["errorType"] == "Runtime.ExitError"
    assert "exited with status 1" in letter["error"]["errorMessage"]
