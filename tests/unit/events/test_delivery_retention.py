"""Retention of a rule's delivery stream: acknowledged records are trimmed, pending ones kept.

The records a delivery worker acknowledges (through its ``Acks``) stay in the
stream; its trimmer drops those provably acknowledged once ``keep_acked``
seconds older than the oldest still needed. Virtual time on a FakeClock
without autojump; memory and SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.events.delivery import DELIVER_GROUP, DeliveryWorker, Rule
from reflow.events.dlq import DeadLetters
from reflow.testing import FakeClock

KEEP, EVERY, RATE = 30.0, 10.0, 8


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
async def shared(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        opened = memory_backend(clock)
    else:
        opened = await open_backend(f"sqlite:///{tmp_path}/events.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def worker(backend: Backend, clock: FakeClock) -> DeliveryWorker:
    # The target is never called: records are taken and acknowledged by the test.
    rule = Rule(name="render", pattern=None, target=cast(Any, None))
    letters = DeadLetters(backend.kv, backend.log, clock)
    return DeliveryWorker(
        rule, backend, letters, clock=clock, lease=30.0, keep_acked=KEEP, trim_every=EVERY
    )


async def deliver(backend: Backend, w: DeliveryWorker, count: int) -> list[str]:
    """Take up to ``count`` records and acknowledge them as the worker does."""
    entries = await backend.log.read(w.stream, DELIVER_GROUP, w.consumer, count=count)
    await w._acks.ack(*(entry.id for entry in entries))
    return [entry.id for entry in entries]


async def test_delivery_stream_stays_bounded(shared: Backend, clock: FakeClock) -> None:
    w = worker(shared, clock)
    longest = 0
    for second in range(300):
        for index in range(RATE):
            await shared.log.append(w.stream, f"r{second}-{index}".encode())
        assert len(await deliver(shared, w, RATE)) == RATE
        if w.trimmer.due():
            await w.trim()
        longest = max(longest, await shared.log.length(w.stream))
        clock.advance(1.0)
    assert longest <= RATE * (KEEP + EVERY + 2)
    assert w.trimmer.trimmed >= 300 * RATE - RATE * (KEEP + EVERY + 2)


async def test_pending_and_undelivered_records_are_kept(shared: Backend, clock: FakeClock) -> None:
    w = worker(shared, clock)
    await shared.log.append(w.stream, b"held")
    held = await shared.log.read(w.stream, DELIVER_GROUP, "busy", count=1, lease=1e6)
    for second in range(100):
        await shared.log.append(w.stream, f"r{second}".encode())
        await deliver(shared, w, 1)
        clock.advance(1.0)
    for second in range(5):  # appended, never read
        await shared.log.append(w.stream, f"later{second}".encode())
    clock.advance(10 * KEEP)
    await w.trim()
    data = [entry.data for entry in await shared.log.range(w.stream)]
    assert data[0] == b"held"  # pending (300 s old): it and all after it stay
    assert data[-5:] == [f"later{second}".encode() for second in range(5)]
    assert len(data) == 106
    await shared.log.ack(w.stream, DELIVER_GROUP, [held[0].id])
    await w.trim()
    data = [entry.data for entry in await shared.log.range(w.stream)]
    # Now up to KEEP s before r99 (the newest acknowledged here) goes; the unread stay.
    assert b"held" not in data
    assert data[-5:] == [f"later{second}".encode() for second in range(5)]
    assert len(data) <= KEEP + 1 + 5
