"""Retries waiting out a back-off do not stop a rule's fresh events (virtual time, no autojump).

A rule's worker holds at most ``concurrency * HELD_PER_SLOT`` records (128
by default). 300 events fail against a target that is down, with a
ten-minute back-off; the target comes back; fresh events must still be
delivered at once, before any of the back-offs has run out, and the 300
retries must each be delivered exactly once more when it has.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.delivery import Delivery, RetryPolicy, Rule, encode_record, rule_stream
from reflow.events.model import Event
from reflow.events.retries import RETRY_PREFIX
from reflow.events.targets import CallableTarget
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server
from tests.functional.events.helpers import eventually

PATTERN = {"source": ["cms"]}
BACKOFF = RetryPolicy(max_attempts=3, base=600.0, cap=600.0)  # 300-600 s after attempt 1


class Target:
    """Fails every call while ``down``; records (event id, attempt) of every call."""

    def __init__(self) -> None:
        self.down = True
        self.calls: list[tuple[str, int]] = []

    def __call__(self, payload: Any, delivery: Delivery) -> None:
        self.calls.append((delivery.event.id, delivery.attempt))
        if self.down:
            raise RuntimeError("the target is down")

    def attempts(self) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = defaultdict(list)
        for event_id, attempt in self.calls:
            seen[event_id].append(attempt)
        return seen


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Backend, FakeClock]]:
    clock = FakeClock()  # no autojump: a back-off ends only when the test moves the clock
    if request.param == "memory":
        yield memory_backend(clock), clock
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reflow.db'}"
    else:
        require_server(REDIS_URL, "Redis")
        url = f"{REDIS_URL}?prefix=test-parked-{uuid.uuid4().hex[:8]}:"
    backend = await open_backend(url, data_dir=tmp_path, clock=clock)
    yield backend, clock
    if request.param == "redis":
        for stream in (bus_stream("default"), rule_stream("render")):
            await backend.log.delete_stream(stream)
        for item in await backend.kv.scan("events."):
            await backend.kv.delete(item.key)
    await backend.close()


def articles(first: int, count: int) -> list[Event]:
    return [Event(source="cms", type="Saved", data={"n": n}) for n in range(first, first + count)]


async def parked(store: Backend, count: int, *, timeout: float = 10.0) -> None:
    """Wait (real time) until ``count`` retries are parked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(await store.kv.scan(RETRY_PREFIX)) != count:
        if loop.time() > deadline:
            raise AssertionError(f"{count} parked retries not reached in time")
        await asyncio.sleep(0.01)


async def put_all(bus: EventBus, events: list[Event]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(events), 10):
        ids += await bus.put(events[start : start + 10])
    return ids


async def test_300_retries_in_backoff_do_not_stop_fresh_events(
    backend: tuple[Backend, FakeClock],
) -> None:
    store, clock = backend
    target = Target()
    bus = EventBus(store, clock=clock, rng=random.Random(5))
    bus.add_rule(Rule("render", PATTERN, CallableTarget("render", target), retry=BACKOFF))
    started = clock.time()
    await bus.start()
    try:
        failing = await put_all(bus, articles(0, 300))
        await eventually(lambda: len(target.calls) == 300, timeout=60.0)
        await eventually(lambda: clock.sleepers >= 1)  # waiting for the first retry's time

        target.down = False
        fresh = await put_all(bus, articles(300, 20))
        await eventually(lambda: len(target.calls) == 320, timeout=30.0)
        assert clock.time() == started  # delivered before any back-off ran out
        assert {event_id for event_id, _ in target.calls[300:]} == set(fresh)
        await parked(store, 300)  # the retries wait in KV, held by no worker

        clock.advance(BACKOFF.cap)  # every back-off is over
        await eventually(lambda: len(target.calls) == 620, timeout=60.0)
        left = await store.kv.scan(RETRY_PREFIX)
        letters = await bus.dead_letters.list()
    finally:
        await bus.stop()
    attempts = target.attempts()
    assert all(attempts[event_id] == [1, 2] for event_id in failing)
    assert all(attempts[event_id] == [1] for event_id in fresh)
    assert left == []
    assert letters == []


async def test_a_retry_record_read_long_before_its_due_time_is_parked_not_held() -> None:
    """A retry record in the stream itself (as written before retries were parked)."""
    clock = FakeClock()
    store = memory_backend(clock)
    target = Target()
    target.down = False
    bus = EventBus(store, clock=clock, concurrency=1)  # holds at most 8 records
    bus.add_rule(Rule("render", PATTERN, CallableTarget("render", target), retry=BACKOFF))
    waiting = articles(0, 20)
    for event in waiting:
        record = encode_record(
            event, "render", attempt=2, first=clock.time(), due=clock.time() + 300.0
        )
        await store.log.append(rule_stream("render"), record)
    await bus.start()
    try:
        await eventually(lambda: clock.sleepers >= 1)
        fresh = await put_all(bus, articles(20, 5))
        await eventually(lambda: len(target.calls) == 5)
        assert [event_id for event_id, _ in target.calls] == fresh
        await parked(store, 20)
        clock.advance(300.0)
        await eventually(lambda: len(target.calls) == 25)
    finally:
        await bus.stop()
        await store.close()
    assert sorted(target.calls[5:]) == sorted((event.id, 2) for event in waiting)


async def test_retries_parked_by_a_process_that_stopped_are_delivered_by_another() -> None:
    clock = FakeClock()
    store = memory_backend(clock)
    broken = Target()
    first = EventBus(store, clock=clock, consumer="first")
    first.add_rule(Rule("render", PATTERN, CallableTarget("render", broken), retry=BACKOFF))
    await first.start()
    try:
        [event_id] = await first.put(articles(0, 1))
        await eventually(lambda: len(broken.calls) == 1)
        await eventually(lambda: clock.sleepers == 1)  # parked; its waker waits for it
    finally:
        await first.stop()  # gone, with the retry parked

    healthy = Target()
    healthy.down = False
    second = EventBus(store, clock=clock, consumer="second", retry_look_every=0.05)
    second.add_rule(Rule("render", PATTERN, CallableTarget("render", healthy), retry=BACKOFF))
    await second.start()
    try:
        await eventually(lambda: clock.sleepers == 1)
        clock.advance(BACKOFF.cap)
        await eventually(lambda: healthy.calls == [(event_id, 2)])
    finally:
        await second.stop()
        await store.close()
