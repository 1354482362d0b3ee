"""A scheduler killed between claiming a firing and putting its event loses nothing.

The victim (tests/functional/events/scheduler_victim.py) is a real process
on SQLite or Redis that claims the 22:14:00 firing of ``sitemap`` and is
SIGKILLed before its put. Another scheduler — already running, or started
later — puts that firing's event once the victim's lease has run out on the
Clock, with the id every process derives for it, and the schedule's rule
delivers it once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.delivery import Delivery, Rule, rule_stream
from reflow.events.scheduler import (
    Scheduler,
    open_key,
    schedule_event_id,
    schedule_pattern,
)
from reflow.events.targets import CallableTarget
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server
from tests.functional.events.helpers import eventually
from tests.functional.events.scheduler_victim import LEASE, SITEMAP, START

ROOT = Path(__file__).resolve().parents[3]
FIRST = datetime(2023, 11, 14, 22, 14, tzinfo=UTC)  # the firing the victim claims
STAMP = int(FIRST.timestamp() * 1000)


@pytest.fixture(params=["sqlite", "redis"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reflow.db'}"
        return
    require_server(REDIS_URL, "Redis")
    url = f"{REDIS_URL}?prefix=fault-sched-{uuid.uuid4().hex[:8]}:"
    yield url
    backend = await open_backend(url, data_dir=tmp_path)
    for stream in (bus_stream("default"), rule_stream("schedule.sitemap")):
        await backend.log.delete_stream(stream)
    for item in await backend.kv.scan("events."):
        await backend.kv.delete(item.key)
    await backend.close()


async def claim_and_die(url: str, tmp_path: Path, namespace: str) -> str:
    """Run the victim until it has claimed the firing, SIGKILL it; return the claimed id."""
    journal = tmp_path / "journal.txt"
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.functional.events.scheduler_victim",
        url,
        str(journal),
        namespace,
        cwd=ROOT,
    )
    try:
        await eventually(
            lambda: journal.exists() and "claimed" in journal.read_text(encoding="utf-8"),
            timeout=30.0,
        )
    finally:
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
    [line] = journal.read_text(encoding="utf-8").splitlines()
    return line.split()[1]


@dataclass
class Survivor:
    """A second scheduler over the same backend, whose bus delivers the schedule's rule."""

    backend: Backend
    clock: FakeClock
    bus: EventBus
    scheduler: Scheduler
    delivered: list[str]

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.bus.stop()
        await self.backend.close()

    async def bus_ids(self) -> list[str]:
        entries = await self.backend.log.range(bus_stream("default"))
        return [json.loads(entry.data)["event"]["id"] for entry in entries]


async def survivor(url: str, tmp_path: Path, namespace: str, clock: FakeClock) -> Survivor:
    backend = await open_backend(url, data_dir=tmp_path, clock=clock)
    delivered: list[str] = []

    def record(payload: object, delivery: Delivery) -> None:
        delivered.append(delivery.event.id)

    bus = EventBus(backend, clock=clock)
    target = CallableTarget("sitemap", record)
    bus.add_rule(Rule("schedule.sitemap", schedule_pattern("sitemap"), target))
    scheduler = Scheduler([SITEMAP], bus, backend.kv, clock=clock, namespace=namespace, lease=LEASE)
    await bus.start()
    await scheduler.start()
    return Survivor(backend, clock, bus, scheduler, delivered)


async def test_a_running_scheduler_puts_the_firing_of_one_killed_after_its_claim(
    url: str, tmp_path: Path
) -> None:
    namespace = f"site{uuid.uuid4().hex[:6]}"
    expected = schedule_event_id(namespace, "sitemap", STAMP)
    clock = FakeClock(START)
    other = await survivor(url, tmp_path, namespace, clock)
    try:
        assert await claim_and_die(url, tmp_path, namespace) == expected
        await eventually(lambda: clock.sleepers >= 1)
        clock.advance(60.0)  # 22:14:20: this scheduler loses the claim of 22:14:00
        await eventually(lambda: clock.sleepers >= 2)  # its timer, and a watcher on the claim
        await asyncio.sleep(0.2)
        assert await other.bus_ids() == []  # the holder's lease (until 22:14:50) still runs
        assert other.scheduler.fired == []

        clock.advance(LEASE)  # 22:14:50: the lease is over
        await eventually(lambda: other.delivered == [expected])
        assert other.scheduler.fired == [("sitemap", FIRST)]
        assert await other.backend.kv.get(open_key(namespace, "sitemap", STAMP)) is None

        clock.advance(60.0)  # 22:15:50: the next period fires as usual, once
        await eventually(lambda: len(other.delivered) == 2)
        await asyncio.sleep(0.2)
        ids = await other.bus_ids()
    finally:
        await other.stop()
    assert ids == [expected, schedule_event_id(namespace, "sitemap", STAMP + 60_000)]
    assert other.delivered == ids


async def test_a_scheduler_started_later_puts_the_firing_a_killed_one_left_open(
    url: str, tmp_path: Path
) -> None:
    namespace = f"site{uuid.uuid4().hex[:6]}"
    expected = schedule_event_id(namespace, "sitemap", STAMP)
    assert await claim_and_die(url, tmp_path, namespace) == expected
    # Started after the victim's lease ran out (22:14:50), before the next period.
    clock = FakeClock(START + 60.0 + LEASE + 1.0)
    other = await survivor(url, tmp_path, namespace, clock)
    try:
        await eventually(lambda: other.delivered == [expected])
        await asyncio.sleep(0.2)
        ids = await other.bus_ids()
        left = await other.backend.kv.get(open_key(namespace, "sitemap", STAMP))
    finally:
        await other.stop()
    assert ids == [expected]
    assert other.delivered == [expected]
    assert left is None
