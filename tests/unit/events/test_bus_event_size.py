"""The 256 KB limit: what is counted, and that an event is encoded to count it once per put.

reflow counts the UTF-8 bytes of the event's compact CloudEvents JSON text
(what the bus stores). An event the bus stored was counted when it was put,
so reading it back (the delivery worker, the dead-letter queue) does not
encode it again.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.errors import EventTooLargeError, InvalidEventError
from reflow.events.bus import EventBus
from reflow.events.delivery import Delivery, Rule, decode_record, encode_record
from reflow.events.model import MAX_EVENT_SIZE, Event, json_size
from reflow.events.targets import CallableTarget
from reflow.testing.clock import FakeClock
from tests.functional.events.helpers import eventually


def padded(total: int, char: str) -> dict[str, Any]:
    """A CloudEvent whose JSON text is exactly ``total`` UTF-8 bytes, mostly ``char``s.

    It has a ``time``, so the bus stores it as it is (no time stamped in).
    """
    document = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "cms",
        "type": "Big",
        "time": "2026-12-04T12:00:00Z",
        "data": "",
    }
    room = total - len(json.dumps(document, separators=(",", ":")).encode())
    count, rest = divmod(room, len(char.encode()))
    document["data"] = char * count + "x" * rest
    return document


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_the_limit_counts_utf8_bytes_of_the_json_text(char: str) -> None:
    at_limit = Event.from_cloudevent(padded(MAX_EVENT_SIZE, char))
    assert json_size(at_limit.to_json()) == MAX_EVENT_SIZE
    with pytest.raises(EventTooLargeError) as caught:
        Event.from_cloudevent(padded(MAX_EVENT_SIZE + 1, char))
    assert caught.value.size == MAX_EVENT_SIZE + 1


def test_json_size_is_the_utf8_length() -> None:
    for text in ["", "ascii", "é", "naïve €", "😀 x", '"\\u0000"']:
        assert json_size(text) == len(text.encode("utf-8"))


async def test_the_bus_refuses_one_byte_over_the_limit_and_takes_the_limit() -> None:
    clock = FakeClock()
    bus = EventBus(memory_backend(clock), clock=clock)
    assert await bus.put([padded(MAX_EVENT_SIZE, "é")]) == ["e-1"]
    with pytest.raises(InvalidEventError, match="262145 bytes"):
        await bus.put([padded(MAX_EVENT_SIZE + 1, "é")])


async def test_an_event_is_encoded_to_count_its_size_once_from_put_to_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[str] = []
    to_json = Event.to_json

    def counting(self: Event) -> str:
        encoded.append(self.id)
        return to_json(self)

    monkeypatch.setattr(Event, "to_json", counting)
    clock = FakeClock()
    backend = memory_backend(clock)
    delivered: list[str] = []

    def target(payload: Any, delivery: Delivery) -> None:
        delivered.append(delivery.event.id)

    bus = EventBus(backend, clock=clock, rng=random.Random(1))
    bus.add_rule(Rule("render", {"source": ["cms"]}, CallableTarget("render", target)))
    await bus.start()
    try:
        [event_id] = await bus.put([{"source": "cms", "detail-type": "Saved", "detail": {"n": 1}}])
        await eventually(lambda: delivered == [event_id])
    finally:
        await bus.stop()
        await backend.close()
    # Counted once, on the text put stores (json.dumps there, not Event.to_json).
    assert encoded == []


def test_an_event_read_back_is_not_counted_again() -> None:
    event = Event(source="cms", type="Saved", data={"n": 1})
    record = decode_record(encode_record(event, "render", attempt=1, first=0.0))
    assert record["event"] == event
    # A stored document is trusted to be within the limit (it was counted at
    # put): reading it back does not encode it.
    big = padded(MAX_EVENT_SIZE + 1, "x")
    assert Event.from_cloudevent(big, check_size=False).id == "e-1"
    with pytest.raises(EventTooLargeError):
        Event.from_cloudevent(big)


def test_skipping_the_count_skips_nothing_else() -> None:
    with pytest.raises(InvalidEventError) as caught:
        Event.from_cloudevent({"id": "1", "source": "", "type": "T"}, check_size=False)
    assert caught.value.field == "source"
    with pytest.raises(InvalidEventError):
        Event.from_eventbridge(
            {"source": "s", "detail-type": "T", "resources": "x"}, check_size=False
        )
    # Outside the call, construction counts again.
    with pytest.raises(EventTooLargeError):
        Event(source="cms", type="Big", data="x" * MAX_EVENT_SIZE)


async def test_a_put_entry_whose_detail_is_not_json_is_refused_naming_it() -> None:
    clock = FakeClock()
    bus = EventBus(memory_backend(clock), clock=clock)
    entry = {"source": "cms", "detail-type": "T", "detail": {"tags": {"a", "b"}}}
    with pytest.raises(InvalidEventError) as caught:
        await bus.put([{"source": "cms", "detail-type": "T", "detail": {}}, entry])
    assert caught.value.field == "entries[1].data"
    assert "not JSON-serialisable" in caught.value.problem
