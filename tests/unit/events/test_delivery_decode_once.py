"""The delivery worker decodes a record once and builds no ``Event`` on the success path.

The target's view is read straight from the stored CloudEvents document;
``Delivery.event`` builds the ``Event`` only when a target asks for it (a bus
forward, a dead letter), and ``Delivery.event_id`` never does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.events.bus import EventBus
from reflow.events.delivery import Delivery, RetryPolicy, Rule
from reflow.events.model import Event
from reflow.events.retries import RETRY_PREFIX
from reflow.events.targets import CallableTarget
from reflow.testing import FakeClock


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``Event.from_cloudevent`` call made during the test."""
    calls: list[Any] = []
    original = Event.from_cloudevent.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Event], document: Any, /, **kwargs: Any) -> Event:
        calls.append(document)
        result: Event = original(cls, document, **kwargs)
        return result

    monkeypatch.setattr(Event, "from_cloudevent", classmethod(counted))
    return calls


def test_delivery_builds_the_event_only_when_asked(builds: list[Any]) -> None:
    event = Event(source="cms", type="Saved", data={"n": 1})
    document = json.loads(json.dumps(event.to_cloudevent()))
    delivery = Delivery(document, "render", 2, 5.0)
    assert delivery.event_id == event.id
    assert builds == []
    assert delivery.event == event
    built = len(builds)
    assert built >= 1
    assert delivery.event is delivery.event
    assert len(builds) == built  # built once
    direct = Delivery(event, "render", 1, 0.0)
    assert direct.event is event and direct.event_id == event.id
    assert "render" in repr(direct)


async def until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("not reached")


async def test_a_delivery_builds_no_event_and_sees_the_events_view(builds: list[Any]) -> None:
    clock = FakeClock(1_765_000_000.0)
    seen: list[tuple[Any, str]] = []
    bus = EventBus(memory_backend(clock), clock=clock)
    target = CallableTarget(
        "t", lambda payload, delivery: seen.append((payload, delivery.event_id))
    )
    bus.add_rule(Rule("all", {"source": ["cms"]}, target))
    await bus.start()
    try:
        put = {"source": "cms", "detail-type": "Saved", "detail": {"n": 1}, "resources": ["r"]}
        [event_id] = await bus.put([put])
        await until(lambda: seen)
    finally:
        await bus.stop()
    [(payload, seen_id)] = seen
    assert seen_id == event_id
    expected = Event.from_eventbridge({**put, "id": event_id, "time": payload["time"]})
    assert payload == expected.to_eventbridge()
    assert builds == []  # neither the dispatcher nor the worker rebuilt the event


async def test_a_failed_delivery_parks_the_same_event() -> None:
    clock = FakeClock(1_765_000_000.0)

    def fail(payload: Any, delivery: Delivery) -> None:
        raise RuntimeError("down")

    backend = memory_backend(clock)
    bus = EventBus(backend, clock=clock)
    rule = Rule("all", {"source": ["cms"]}, CallableTarget("t", fail), retry=RetryPolicy())
    bus.add_rule(rule)
    await bus.start()
    try:
        [event_id] = await bus.put([{"source": "cms", "detail-type": "Saved", "detail": {"n": 2}}])
        parked: list[Any] = []

        async def look() -> None:
            for _ in range(2000):
                parked[:] = await backend.kv.scan(RETRY_PREFIX)
                if parked:
                    return
                await asyncio.sleep(0.002)

        await look()
    finally:
        await bus.stop()
    [item] = parked
    record = json.loads(item.value.partition(b"\n")[2])
    assert record["attempt"] == 2 and record["error"] == {"type": "RuntimeError", "message": "down"}
    event = Event.from_cloudevent(record["event"])
    assert (event.id, event.data, event.source, event.type) == (event_id, {"n": 2}, "cms", "Saved")
