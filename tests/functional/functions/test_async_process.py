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
