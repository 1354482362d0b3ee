"""A schedule firing's claim: put again after a failed put, never overtaken within its lease."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend
from reflow.errors import BackendError
from reflow.events.bus import EventBus, bus_stream
from reflow.events.model import Event
from reflow.events.scheduler import ScheduledRule, Scheduler, open_key
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import eventually

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
FIRST = datetime(2023, 11, 14, 22, 14, tzinfo=UTC)
STAMP = int(FIRST.timestamp() * 1000)
SITEMAP = ScheduledRule("sitemap", "rate(1 minute)")
LEASE = 30.0


class StallingBus(EventBus):
    """A bus whose puts fail ``failures`` times, then wait for ``release`` if it is set."""

    def __init__(self, backend: Backend, clock: FakeClock, failures: int = 0) -> None:
        super().__init__(backend, clock=clock)
        self.failures = failures
        self.release: asyncio.Event | None = None

    async def put(
        self, entries: Iterable[Event | Mapping[str, Any]], *, bus: str = "default"
    ) -> list[str]:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("the backend went away for a moment")
        if self.release is not None:
            await self.release.wait()
        return await super().put(entries, bus=bus)


async def bus_ids(backend: Backend) -> list[str]:
    entries = await backend.log.range(bus_stream("default"))
    return [json.loads(entry.data)["event"]["id"] for entry in entries]


async def test_a_failed_put_is_made_again_by_the_same_scheduler_after_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START)
    backend = memory_backend(clock)
    bus = StallingBus(backend, clock, failures=1)
    scheduler = Scheduler([SITEMAP], bus, backend.kv, clock=clock, lease=LEASE)
    await scheduler.start()
    try:
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(60.0)  # 22:14:20: the 22:14:00 firing's put fails
        await eventually(lambda: clock.sleepers == 2)  # the next period, and the open claim
        assert await bus_ids(backend) == []
        clock.advance(LEASE)
        await eventually(lambda: scheduler.fired == [("sitemap", FIRST)])
        ids = await bus_ids(backend)
        left = await backend.kv.get(open_key("app", "sitemap", STAMP))
    finally:
        await scheduler.stop()
        await backend.close()
    assert len(ids) == 1
    assert left is None
    assert "firing at 2023-11-14 22:14:00+00:00 failed" in caplog.text


async def test_a_slow_holder_is_not_overtaken_within_its_lease() -> None:
    clock = FakeClock(START + 60.0)
    backend = memory_backend(clock)
    slow_bus = StallingBus(backend, clock)
    slow_bus.release = asyncio.Event()
    slow = Scheduler([SITEMAP], slow_bus, backend.kv, clock=clock, lease=LEASE)
    other = Scheduler([SITEMAP], EventBus(backend, clock=clock), backend.kv, clock=clock)
    holding = asyncio.create_task(slow.fire(SITEMAP, FIRST))
    try:
        await asyncio.sleep(0.05)  # the holder has claimed and waits in its put
        assert not holding.done()
        assert not await other.fire(SITEMAP, FIRST)  # claimed: it watches the claim instead
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(LEASE - 1.0)
        await asyncio.sleep(0.05)
        assert await bus_ids(backend) == []  # still the holder's
        slow_bus.release.set()
        assert await holding
        clock.advance(2.0)  # the watcher looks again and finds the firing closed
        await eventually(lambda: clock.sleepers == 0)
        await asyncio.sleep(0.05)
    finally:
        await other.stop()
        await slow.stop()
    assert len(await bus_ids(backend)) == 1
    assert slow.fired == [("sitemap", FIRST)]
    assert other.fired == []
    await backend.close()


async def test_a_holder_slower_than_its_lease_leads_to_a_second_put_of_the_same_id() -> None:
    clock = FakeClock(START + 60.0)
    backend = memory_backend(clock)
    slow_bus = StallingBus(backend, clock)
    slow_bus.release = asyncio.Event()
    slow = Scheduler([SITEMAP], slow_bus, backend.kv, clock=clock, lease=LEASE)
    other = Scheduler([SITEMAP], EventBus(backend, clock=clock), backend.kv, clock=clock)
    holding = asyncio.create_task(slow.fire(SITEMAP, FIRST))
    try:
        await asyncio.sleep(0.05)
        assert not await other.fire(SITEMAP, FIRST)
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(LEASE + 1.0)
        await eventually(lambda: other.fired == [("sitemap", FIRST)])
        slow_bus.release.set()
        assert await holding
    finally:
        await other.stop()
        await slow.stop()
    ids = await bus_ids(backend)
    assert len(ids) == 2 and ids[0] == ids[1]  # at least once, always the same id
    assert await backend.kv.get(open_key("app", "sitemap", STAMP)) is None
    await backend.close()


async def test_a_scheduler_leaves_alone_the_open_firings_of_an_app_named_like_it() -> None:
    clock = FakeClock(START + 60.0)
    backend = memory_backend(clock)
    stuck = StallingBus(backend, clock)
    stuck.release = asyncio.Event()
    other_app = Scheduler([SITEMAP], stuck, backend.kv, clock=clock, namespace="app.v2")
    holding = asyncio.create_task(other_app.fire(SITEMAP, FIRST))
    await asyncio.sleep(0.05)  # claimed; its process "dies" here
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    clock.advance(LEASE + 1.0)
    # "app" scans the prefix events.schedule-open.app., which holds app.v2's records too.
    mine = Scheduler([], EventBus(backend, clock=clock), backend.kv, clock=clock, namespace="app")
    await mine.start()
    try:
        await asyncio.sleep(0.05)
    finally:
        await mine.stop()
        await other_app.stop()
    assert await bus_ids(backend) == []
    assert await backend.kv.get(open_key("app.v2", "sitemap", STAMP)) is not None
    await backend.close()


class FlakyKV:
    """A KV whose first ``get`` fails, as a backend hiccup would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failures = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: str) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise BackendError("the backend went away for a moment")
        return await self.inner.get(key)


async def test_a_failed_look_at_an_open_firing_is_logged_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START + 60.0)
    backend = memory_backend(clock)
    stuck = StallingBus(backend, clock)
    stuck.release = asyncio.Event()
    dead = Scheduler([SITEMAP], stuck, backend.kv, clock=clock, lease=LEASE)
    holding = asyncio.create_task(dead.fire(SITEMAP, FIRST))
    await asyncio.sleep(0.05)
    holding.cancel()  # killed with the firing claimed
    await asyncio.gather(holding, return_exceptions=True)
    flaky = FlakyKV(backend.kv)
    later = Scheduler([], EventBus(backend, clock=clock), flaky, clock=clock, lease=LEASE)
    await later.start()  # finds the open firing; its first look fails
    try:
        await eventually(lambda: clock.sleepers == 1)  # waiting a lease before looking again
        clock.advance(LEASE)
        await eventually(lambda: later.fired == [("sitemap", FIRST)])
    finally:
        await later.stop()
        await dead.stop()
    assert len(await bus_ids(backend)) == 1
    assert "recovering the firing" in caplog.text
    await backend.close()


async def test_of_two_schedulers_taking_over_one_stale_firing_one_puts_it() -> None:
    clock = FakeClock(START + 60.0)
    backend = memory_backend(clock)
    stuck = StallingBus(backend, clock)
    stuck.release = asyncio.Event()
    dead = Scheduler([SITEMAP], stuck, backend.kv, clock=clock, lease=LEASE)
    holding = asyncio.create_task(dead.fire(SITEMAP, FIRST))
    await asyncio.sleep(0.05)
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    clock.advance(LEASE + 1.0)
    takers = [
        Scheduler([], EventBus(backend, clock=clock), YieldingKV(backend.kv), clock=clock)
        for _ in range(2)
    ]
    await asyncio.gather(*(taker.start() for taker in takers))
    try:
        await eventually(lambda: sum(len(t.fired) for t in takers) == 1)
        # The loser of the compare-and-set watches the winner's lease, if the
        # winner has not already closed the firing.
        clock.advance(LEASE + 1.0)
        await eventually(lambda: clock.sleepers == 0)
    finally:
        for taker in takers:
            await taker.stop()
        await dead.stop()
    assert len(await bus_ids(backend)) == 1
    await backend.close()


class YieldingKV:
    """A KV that lets the loop run before every call, so two takers interleave."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call
