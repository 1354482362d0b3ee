"""Retention of ``functions.<name>.dlq``: letters are kept ``dlq_retention``, then dropped;
and their redrive.

Nothing acknowledges a dead letter, so the runtime's readers trim the
dead-letter stream by age (14 days by default, SQS's maximum). A letter
younger than that is kept, an older one dropped; the reader's own periodic
trim does it. A redrive queues letters again once each and hides them from
the listing. Virtual time on a FakeClock without autojump; memory and SQLite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow import App, Context
from reflow.backends import Backend, memory_backend, open_backend
from reflow.functions import Runtime, dead_letters, dlq_stream, events_stream
from reflow.functions.invocations import DLQ_RETENTION, redrive_dead_letters
from reflow.testing.clock import FakeClock

app = App("lettered", root=".")
DAY = 24 * 3600.0


@app.function(retries=0)
async def doomed(event: Any, context: Context) -> None:
    """Fail at once, with no retry: every invocation is a dead letter."""
    raise RuntimeError(f"cannot handle {event['n']}")


broken = {"mended": True}
mended_runs: list[Any] = []


@app.function(retries=0)
async def mended(event: Any, context: Context) -> Any:
    """Fail while ``broken`` says so; then note the event."""
    if broken["mended"]:
        raise RuntimeError("still broken")
    mended_runs.append(event)
    return event


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


async def test_a_redrive_queues_each_letter_once_and_hides_it(
    shared: Backend, clock: FakeClock
) -> None:
    broken["mended"], mended_runs[:] = True, []
    runtime = Runtime(app, backend=shared)
    await runtime.start()
    try:
        first = await runtime.invoke_async("mended", {"n": 1})
        second = await runtime.invoke_async("mended", {"n": 2})
        for _ in range(3000):
            if len(await dead_letters(shared.log, "mended")) == 2:
                break
            await asyncio.sleep(0.002)
        letters = await dead_letters(shared.log, "mended", kv=shared.kv)
        assert [letter["requestId"] for letter in letters] == [first, second]
        broken["mended"] = False
        keys = [letters[0]["key"]]
        redrive = redrive_dead_letters
        assert await redrive(shared.log, shared.kv, "mended", clock, keys=keys) == [first]
        assert await redrive(shared.log, shared.kv, "mended", clock, keys=keys) == []
        for _ in range(3000):
            if mended_runs:
                break
            await asyncio.sleep(0.002)
        assert mended_runs == [{"n": 1}]
        listed = await dead_letters(shared.log, "mended", kv=shared.kv)
        assert [letter["requestId"] for letter in listed] == [second]
        assert len(await dead_letters(shared.log, "mended")) == 2  # still in the stream
        assert await redrive(shared.log, shared.kv, "mended", clock) == [second]
        assert await redrive(shared.log, shared.kv, "mended", clock) == []
        for _ in range(3000):
            if len(mended_runs) == 2:
                break
            await asyncio.sleep(0.002)
        assert mended_runs == [{"n": 1}, {"n": 2}]
        assert await dead_letters(shared.log, "mended", kv=shared.kv) == []
        # The redriven invocations keep their request ids.
        queued = [json.loads(e.data) for e in await shared.log.range(events_stream("mended"))]
        assert [(q["id"], q["attempt"]) for q in queued][-2:] == [(first, 1), (second, 1)]
    finally:
        await runtime.stop()


async def test_a_redrive_that_died_after_its_claim_does_not_hide_the_letter(
    shared: Backend, clock: FakeClock
) -> None:
    """A claim left without a queued invocation is taken over after a minute."""
    letter = {"requestId": "r-1", "payload": {"n": 7}, "error": "x", "attempts": 1}
    key = await shared.log.append(dlq_stream("mended"), json.dumps(letter).encode())

    class Dying(Exception):
        """The redrive's process dies between its claim and the append."""

    real_append = shared.log.append

    async def dying_append(stream: str, data: bytes) -> str:
        if stream == events_stream("mended"):
            raise Dying
        return await real_append(stream, data)

    shared.log.append = dying_append  # type: ignore[method-assign]
    redrive = redrive_dead_letters
    with pytest.raises(Dying):
        await redrive(shared.log, shared.kv, "mended", clock)
    # The failed redrive took its claim back: the letter is listed and sent next time.
    assert [item["key"] for item in await dead_letters(shared.log, "mended", kv=shared.kv)] == [key]
    # A claim whose taker died without taking it back (SIGKILL) blocks only for a minute.
    await shared.kv.put(f"functions.dlq.redriven/mended/{key}", f"claim:{clock.time()!r}".encode())
    shared.log.append = real_append  # type: ignore[method-assign]
    assert await redrive(shared.log, shared.kv, "mended", clock) == []
    assert len(await dead_letters(shared.log, "mended", kv=shared.kv)) == 1  # still listed
    clock.advance(61.0)
    assert await redrive(shared.log, shared.kv, "mended", clock) == ["r-1"]
    assert await dead_letters(shared.log, "mended", kv=shared.kv) == []
    assert await redrive(shared.log, shared.kv, "mended", clock) == []
    queued = [json.loads(e.data) for e in await shared.log.range(events_stream("mended"))]
    assert [(q["id"], q["payload"]) for q in queued] == [("r-1", {"n": 7})]
