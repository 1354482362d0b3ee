"""Schedules fire once per period, on the Clock, even with several schedulers running."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.scheduler import SCHEDULE_SOURCE, ScheduledRule, Scheduler
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import eventually

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: not on a minute boundary


async def fired(backend: Backend) -> list[dict[str, object]]:
    entries = await backend.log.range(bus_stream("default"))
    return [json.loads(entry.data)["event"] for entry in entries]


async def run_periods(
    clock: FakeClock, backends: list[Backend], periods: int, *, step: float = 60.0
) -> list[Scheduler]:
    rule = ScheduledRule("sitemap", "rate(1 minute)", {"full": True})
    schedulers = [
        Scheduler([rule], EventBus(b, clock=clock), b.kv, clock=clock, namespace="site")
        for b in backends
    ]
    for scheduler in schedulers:
        await scheduler.start()
    try:
        for period in range(1, periods + 1):
            await eventually(lambda: clock.sleepers >= len(schedulers))
            clock.advance(step)

            def fired(p: int = period) -> bool:
                return sum(len(s.fired) for s in schedulers) == p

            await eventually(fired)
        await eventually(lambda: clock.sleepers >= len(schedulers))
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
    return schedulers


async def test_rate_schedule_fires_once_per_period_with_two_schedulers() -> None:
    clock = FakeClock(START)
    backend = memory_backend(clock)
    schedulers = await run_periods(clock, [backend, backend], 5)
    events = await fired(backend)
    assert len(events) == 5
    times = [event["time"] for event in events]
    assert times == [
        "2023-11-14T22:14:00Z",
        "2023-11-14T22:15:00Z",
        "2023-11-14T22:16:00Z",
        "2023-11-14T22:17:00Z",
        "2023-11-14T22:18:00Z",
    ]
    assert all(event["source"] == SCHEDULE_SOURCE for event in events)
    assert events[0]["data"] == {"full": True}
    assert sum(len(s.fired) for s in schedulers) == 5
    await backend.close()


async def test_schedule_event_id_is_the_same_for_the_same_period() -> None:
    clock = FakeClock(START)
    backend = memory_backend(clock)
    rule = ScheduledRule("sitemap", "rate(1 minute)")
    one = Scheduler([rule], EventBus(backend, clock=clock), backend.kv, clock=clock)
    other_backend = memory_backend(clock)
    two = Scheduler([rule], EventBus(other_backend, clock=clock), other_backend.kv, clock=clock)
    moment = datetime(2023, 11, 14, 22, 14, tzinfo=UTC)
    assert await one.fire(rule, moment) and await two.fire(rule, moment)
    assert (await fired(backend))[0]["id"] == (await fired(other_backend))[0]["id"]
    assert not await one.fire(rule, moment)  # the claim is taken: no second firing


async def test_missed_periods_are_not_backfilled() -> None:
    clock = FakeClock(START)
    backend = memory_backend(clock)
    rule = ScheduledRule("sitemap", "rate(1 minute)")
    scheduler = Scheduler([rule], EventBus(backend, clock=clock), backend.kv, clock=clock)
    await scheduler.start()
    try:
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(10 * 60)  # ten periods pass at once
        await eventually(lambda: len(scheduler.fired) == 1)
        await eventually(lambda: clock.sleepers == 1)
    finally:
        await scheduler.stop()
    assert len(await fired(backend)) == 1


@pytest.fixture
async def sqlite_pair(tmp_path: Path) -> AsyncIterator[tuple[FakeClock, list[Backend]]]:
    clock = FakeClock(START)
    url = f"sqlite:///{tmp_path / 'reflow.db'}"
    first = await open_backend(url, data_dir=tmp_path, clock=clock)
    second = await open_backend(url, data_dir=tmp_path, clock=clock)
    yield clock, [first, second]
    await first.close()
    await second.close()


async def test_two_schedulers_on_separate_sqlite_connections_fire_once_per_period(
    sqlite_pair: tuple[FakeClock, list[Backend]],
) -> None:
    clock, backends = sqlite_pair
    await run_periods(clock, backends, 3)
    assert len(await fired(backends[0])) == 3
