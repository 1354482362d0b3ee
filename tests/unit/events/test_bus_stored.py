"""How the bus stores events and turns them into delivery records.

The dispatcher neither rebuilds nor re-encodes an :class:`Event`: it matches
the EventBridge view read straight from the stored CloudEvent and splices
the stored text into the delivery records. These tests hold that shortcut to
what the :class:`Event` round trip gives.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from reflow.backends import memory_backend
from reflow.errors import InvalidEventError
from reflow.events.bus import EventBus, bus_stream, eventbridge_view
from reflow.events.delivery import Rule, decode_record
from reflow.events.model import MAX_EVENT_SIZE, Event
from reflow.events.targets import CallableTarget
from reflow.testing import FakeClock
from tests.unit.events.test_model import events


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_the_view_of_a_stored_cloudevent_is_the_events_own_view(event: Event) -> None:
    stored = json.loads(json.dumps(event.to_cloudevent()))
    assert eventbridge_view(stored) == event.to_eventbridge()


def _bus(clock: FakeClock) -> EventBus:
    bus = EventBus(memory_backend(clock=clock), clock=clock)
    bus.add_rule(Rule("all", {"source": ["cms"]}, CallableTarget("t", lambda p, d: None)))
    bus.add_rule(Rule("saved", {"detail-type": ["Saved"]}, CallableTarget("t", lambda p, d: None)))
    return bus


async def test_put_stamps_the_time_and_records_carry_the_same_event() -> None:
    clock = FakeClock(start=1_765_000_000.25)
    bus = _bus(clock)
    [event_id] = await bus.put([{"source": "cms", "detail-type": "Saved", "detail": {"n": 1}}])
    [entry] = await bus.backend.log.range(bus_stream("default"))
    records = bus.records("default", entry.data)
    assert [stream for stream, _ in records] == ["events.rule.all", "events.rule.saved"]
    expected = Event(source="cms", type="Saved", data={"n": 1}, id=event_id).stamped(clock)
    for stream, data in records:
        record = decode_record(data)
        assert record["event"] == expected
        assert record["event"].time == expected.time
        assert (record["rule"], record["attempt"], record["due"]) == (stream[12:], 1, 0.0)
        assert record["first"] == 1_765_000_000.25


async def test_an_event_with_its_own_time_keeps_it() -> None:
    clock = FakeClock(start=1_765_000_000.0)
    bus = _bus(clock)
    own = {"source": "cms", "detail-type": "Saved", "time": "2026-01-02T03:04:05Z"}
    await bus.put([own])
    [entry] = await bus.backend.log.range(bus_stream("default"))
    [(_, data), _] = bus.records("default", entry.data)
    assert decode_record(data)["event"].to_eventbridge()["time"] == "2026-01-02T03:04:05Z"


async def test_entries_stored_in_the_older_layout_are_still_fanned_out() -> None:
    clock = FakeClock(start=1_765_000_000.0)
    bus = _bus(clock)
    event = Event(source="cms", type="Other", data={"ü": "ñ"}, id="old-1").stamped(clock)
    older = json.dumps({"event": event.to_cloudevent(), "at": 1_764_999_999.5}).encode()
    [(stream, data)] = bus.records("default", older)
    record = decode_record(data)
    assert stream == "events.rule.all"
    assert record["event"] == event and record["first"] == 1_764_999_999.5


async def test_replay_records_carry_the_replay_name() -> None:
    clock = FakeClock(start=1_765_000_000.0)
    bus = _bus(clock)
    await bus.put([{"source": "cms", "detail-type": "Saved"}])
    [entry] = await bus.backend.log.range(bus_stream("default"))
    [(_, data)] = bus.records("default", entry.data, only="saved", replay="fix-1")
    assert decode_record(data)["replay"] == "fix-1"


def _sized(size: int) -> dict[str, Any]:
    """An EventBridge entry (no time) whose CloudEvent JSON is ``size`` bytes."""
    probe = Event(source="cms", type="T", id="big", data={"x": ""})
    padding = size - len(probe.to_json().encode())
    return {"source": "cms", "detail-type": "T", "id": "big", "detail": {"x": "a" * padding}}


async def test_a_put_refuses_an_event_that_the_time_stamp_takes_over_the_limit() -> None:
    clock = FakeClock(start=1_765_000_000.0)
    bus = _bus(clock)
    fits = _sized(MAX_EVENT_SIZE - 5)
    assert Event.from_eventbridge(fits).time is None  # valid as given ...
    with pytest.raises(InvalidEventError, match=r"entries\[1\]") as caught:
        await bus.put([{"source": "cms", "detail-type": "ok"}, fits])  # ... not once stamped
    assert "256" in str(caught.value) or str(MAX_EVENT_SIZE) in str(caught.value)
    assert await bus.backend.log.length(bus_stream("default")) == 0  # nothing half-put


async def test_a_put_of_several_events_is_one_write_in_order() -> None:
    clock = FakeClock(start=1_765_000_000.0)
    bus = _bus(clock)
    calls: list[int] = []
    append_many = bus.backend.log.append_many

    async def counted(stream: str, items: Any) -> list[str]:
        calls.append(len(items))
        return await append_many(stream, items)

    bus.backend.log.append_many = counted  # type: ignore[method-assign]
    ids = await bus.put([{"source": "cms", "detail-type": str(i)} for i in range(7)])
    assert calls == [7]
    stored = [
        json.loads(e.data)["event"]["id"] for e in await bus.backend.log.range("events.bus.default")
    ]
    assert stored == ids
