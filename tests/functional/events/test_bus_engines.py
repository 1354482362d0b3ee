"""Retries and dead letters behave the same on SQLite and Redis as in memory."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.delivery import RetryPolicy, Rule, rule_stream
from reflow.events.dlq import dlq_prefix
from reflow.events.model import Event
from reflow.events.targets import CallableTarget
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server
from tests.functional.events.helpers import Recorder, eventually


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock(autojump=True)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reflow.db'}"
    else:
        require_server(REDIS_URL, "Redis")
        url = f"{REDIS_URL}?prefix=test-bus-{uuid.uuid4().hex[:8]}:"
    backend = await open_backend(url, data_dir=tmp_path, clock=clock)
    yield backend
    if request.param == "redis":
        for stream in (bus_stream("default"), rule_stream("render")):
            await backend.log.delete_stream(stream)
        for item in await backend.kv.scan(dlq_prefix()):
            await backend.kv.delete(item.key)
    await backend.close()


async def test_third_attempt_succeeds_with_the_same_event_id(backend: Backend) -> None:
    recorder = Recorder(failures=2)
    bus = EventBus(backend, rng=random.Random(3))
    bus.add_rule(Rule("render", {"source": ["cms"]}, CallableTarget("render", recorder)))
    await bus.start()
    try:
        [event_id] = await bus.put([Event(source="cms", type="Saved")])
        await eventually(lambda: len(recorder.calls) == 3)
    finally:
        await bus.stop()
    assert [call[0] for call in recorder.calls] == [event_id] * 3


async def test_always_failing_target_is_dead_lettered_after_exactly_three_attempts(
    backend: Backend,
) -> None:
    recorder = Recorder(failures=10**6)
    bus = EventBus(backend, rng=random.Random(3))
    target = CallableTarget("render", recorder)
    bus.add_rule(Rule("render", {"source": ["cms"]}, target, retry=RetryPolicy(max_attempts=3)))
    await bus.start()
    try:
        [event_id] = await bus.put([Event(source="cms", type="Saved")])
        letters = []
        for _ in range(1000):
            letters = await bus.dead_letters.list("render")
            if letters:
                break
            await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    assert len(recorder.calls) == 3
    assert [(letter.event.id, letter.attempts) for letter in letters] == [(event_id, 3)]
