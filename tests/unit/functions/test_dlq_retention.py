"""Retention of ``functions.<name>.dlq``: letters are kept ``dlq_retention``, then dropped.

Nothing acknowledges a dead letter, so the runtime's readers trim the
dead-letter stream by age (14 days by default, SQS's maximum). A letter
younger than that is kept, an older one dropped; the reader's own periodic
trim does it. Virtual time on a FakeClock without autojump; memory and SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Context
from reflow.backends import Backend, memory_backend, open_backend
from reflow.functions import Runtime, dead_letters, dlq_stream
from reflow.functions.invocations import DLQ_RETENTION
from reflow.testing.clock import FakeClock

app = App("lettered", root=".")
DAY = 24 * 3600.0


@app.function(retries=0)
async def doomed(event: Any, context: Context) -> None:
    """Fail at once, with no retry: every invocation is a dead letter."""
    raise RuntimeError(f"cannot handle {event['n']}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture(params=["memory", "sqlite"])
async def shared(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        opened = memory_backend(clock)
    else:
        opened = await open_backend(f"sqlite:///{tmp_path}/dlq.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


async def lettered(backend: Backend, count: int) -> list[int]:
    """Wait (real time) until ``count`` letters exist; return their payloads' ``n``."""
    for _ in range(3000):
        letters = await dead_letters(backend.log, "doomed")
        if len(letters) >= count:
            return [letter["payload"]["n"] for letter in letters]
        await asyncio.sleep(0.002)
    raise AssertionError("the letters did not arrive")


def test_the_default_is_fourteen_days() -> None:
    assert DLQ_RETENTION == 14 * DAY
    assert Runtime(app).dlq_retention == 14 * DAY


async def test_letters_older_than_the_retention_are_dropped(
    shared: Backend, clock: FakeClock
) -> None:
    runtime = Runtime(app, backend=shared)
    await runtime.start()
    invocations = runtime.invocations
    assert invocations is not None
    try:
        await runtime.invoke_async("doomed", {"n": 1})
        assert await lettered(shared, 1) == [1]
        clock.advance(DAY)
        await runtime.invoke_async("doomed", {"n": 2})
        assert await lettered(shared, 2) == [1, 2]
        # Letter 1 is 14 days old less a second: kept, and so is the younger one.
        clock.advance(13 * DAY - 1.0)
        await invocations.trim()
        assert await lettered(shared, 2) == [1, 2]
        assert invocations.dlq_trimmed == 0
        # A minute later letter 1 is past 14 days, and the reader's periodic
        # trim (every minute) is due again: it drops letter 1.
        clock.advance(60.0)
        for _ in range(200):
            if invocations.dlq_trimmed:
                break
            await asyncio.sleep(0.05)
            # The reader's blocking read ends on the Clock: nudge it on.
            clock.advance(0.5)
        assert invocations.dlq_trimmed == 1
        assert await lettered(shared, 1) == [2]
        clock.advance(DAY)
        await invocations.trim()
        assert await shared.log.length(dlq_stream("doomed")) == 0
    finally:
        await runtime.stop()


async def test_the_retention_is_a_runtime_setting(shared: Backend, clock: FakeClock) -> None:
    runtime = Runtime(app, backend=shared, dlq_retention=3600.0)
    await runtime.start()
    invocations = runtime.invocations
    assert invocations is not None
    try:
        await runtime.invoke_async("doomed", {"n": 1})
        assert await lettered(shared, 1) == [1]
        clock.advance(1800.0)
        await runtime.invoke_async("doomed", {"n": 2})
        assert await lettered(shared, 2) == [1, 2]
        clock.advance(1801.0)
        await invocations.trim()
        assert await lettered(shared, 1) == [2]
    finally:
        await runtime.stop()
