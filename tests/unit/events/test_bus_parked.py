"""``ParkedRetries``: records wait in KV until due, then go back to their stream exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend
from reflow.events.retries import RETRY_PREFIX, ParkedRetries
from reflow.testing.clock import FakeClock

STREAM = "events.rule.render"


def parking(backend: Backend, clock: FakeClock, **options: Any) -> ParkedRetries:
    return ParkedRetries(backend.kv, backend.log, clock=clock, **options)


async def stream(backend: Backend) -> list[bytes]:
    return [entry.data for entry in await backend.log.range(STREAM)]


class YieldingKV:
    """A KV that lets the loop run before every call, so two wakers interleave."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call


async def test_records_move_back_in_due_order_each_when_due() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    retries = parking(backend, clock)
    await retries.park(STREAM, b"late", 1_005.0)
    await retries.park(STREAM, b"early", 1_001.0)
    assert await retries.move_due() == 1_001.0
    assert await stream(backend) == []
    clock.advance(1.0)
    assert await retries.move_due() == 1_005.0
    assert await stream(backend) == [b"early"]
    clock.advance(10.0)
    assert await retries.move_due() is None
    assert await stream(backend) == [b"early", b"late"]
    assert await backend.kv.scan(RETRY_PREFIX) == []


async def test_two_wakers_move_a_due_record_once() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    kv = YieldingKV(backend.kv)
    one = ParkedRetries(kv, backend.log, clock=clock)
    two = ParkedRetries(kv, backend.log, clock=clock)
    for n in range(20):
        await one.park(STREAM, f"r{n}".encode(), 1_000.0)
    await asyncio.gather(one.move_due(), two.move_due())
    assert sorted(await stream(backend)) == sorted(f"r{n}".encode() for n in range(20))
    assert one.moved + two.moved == 20
    assert one.moved > 0 and two.moved > 0  # they really did race


async def test_a_claim_left_by_a_dead_waker_is_taken_over_after_its_lease() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    retries = parking(backend, clock, lease=30.0)
    key = await retries.park(STREAM, b"record", 1_000.0)
    # Another waker claimed it and died before appending it.
    item = await backend.kv.get(key)
    assert item is not None
    await backend.kv.put(key, b"1030.0\nrecord", expect_version=item.version)
    assert await retries.move_due() == 1_030.0
    assert await stream(backend) == []
    clock.advance(30.0)
    assert await retries.move_due() is None
    assert await stream(backend) == [b"record"]


async def test_each_record_goes_back_to_its_own_stream_and_foreign_keys_stay() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    await backend.kv.put(RETRY_PREFIX + "not-a-parked-key", b"0\ny")
    retries = parking(backend, clock)
    await retries.park(STREAM, b"mine", 999.0)
    await retries.park("events.rule.audit", b"theirs", 999.5)
    assert await retries.move_due() is None
    assert await stream(backend) == [b"mine"]
    assert [entry.data for entry in await backend.log.range("events.rule.audit")] == [b"theirs"]
    assert [item.key for item in await backend.kv.scan(RETRY_PREFIX)] == [
        RETRY_PREFIX + "not-a-parked-key"
    ]


async def test_the_waker_finds_records_another_process_parked_within_look_every() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    waker = parking(backend, clock, look_every=0.05)
    running = asyncio.create_task(waker.run())
    try:
        await asyncio.sleep(0.01)  # it looked, found nothing, and waits
        await parking(backend, clock).park(STREAM, b"theirs", 1_000.0)  # not this waker's nudge
        for _ in range(200):
            if await stream(backend):
                break
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await stream(backend) == [b"theirs"]


async def test_the_waker_wakes_for_an_earlier_record_parked_here() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    retries = parking(backend, clock, look_every=60.0)
    await retries.park(STREAM, b"late", 1_600.0)
    running = asyncio.create_task(retries.run())
    try:
        await asyncio.sleep(0.01)  # asleep until 1,600
        await retries.park(STREAM, b"soon", 1_010.0)
        await asyncio.sleep(0.01)
        clock.advance(10.0)
        for _ in range(200):
            if await stream(backend):
                break
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await stream(backend) == [b"soon"]


class FailingOnceKV(YieldingKV):
    """A KV whose first scan fails, as a backend hiccup would."""

    failed = False

    def __getattr__(self, name: str) -> Any:
        if name == "scan" and not self.failed:
            self.failed = True

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("the backend went away for a moment")

            return fail
        return super().__getattr__(name)


async def test_a_failed_look_is_logged_and_the_waker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    await parking(backend, clock).park(STREAM, b"record", 1_000.0)
    kv = FailingOnceKV(backend.kv)
    waker = ParkedRetries(kv, backend.log, clock=clock, look_every=0.05)
    running = asyncio.create_task(waker.run())
    try:
        for _ in range(200):
            if await stream(backend):
                break
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await stream(backend) == [b"record"]
    assert "moving due retries back to their streams failed" in caplog.text


def test_a_waker_can_run_again_in_another_event_loop() -> None:
    clock = FakeClock(1_000.0)
    backend = memory_backend(clock)
    retries = parking(backend, clock, look_every=0.05)

    async def one_run(record: bytes) -> list[bytes]:
        running = asyncio.create_task(retries.run())
        try:
            await asyncio.sleep(0.01)
            await retries.park(STREAM, record, 1_000.0)  # nudges the waker of this loop
            for _ in range(200):
                if record in await stream(backend):
                    break
                await asyncio.sleep(0.01)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        return await stream(backend)

    assert asyncio.run(one_run(b"first")) == [b"first"]
    assert asyncio.run(one_run(b"second")) == [b"first", b"second"]
