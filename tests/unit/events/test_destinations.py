"""Functions' ``bus:`` / ``flow:`` destination streams: delivered, then trimmed safely.

A :class:`DestinationReader` puts bus records on their bus as Lambda's
EventBridge event and starts flows with flow records, acknowledging each only
after; its trimmer drops acknowledged records once ``keep_acked`` seconds
older than any still needed, never a pending or an unread one. Virtual time on
a FakeClock without autojump (the reader blocks in real time); memory and
SQLite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, memory_backend, open_backend
from reflow.events.bus import EventBus, bus_stream
from reflow.events.destinations import DESTINATIONS_GROUP, DestinationReader, destination_event
from reflow.functions.invocations import Destination
from reflow.testing import FakeClock

KEEP, EVERY, RATE = 30.0, 10.0, 4
BUS, FLOW = Destination("bus", "done"), Destination("flow", "after")
ARN = "arn:aws:lambda:local:000000000000:function:render"


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
        opened = await open_backend(f"sqlite:///{tmp_path}/dest.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def record(request_id: str, condition: str = "Success") -> bytes:
    """A destination record as the functions runtime writes it."""
    outcome = {
        "version": "1.0",
        "requestContext": {"requestId": request_id, "functionArn": ARN, "condition": condition},
        "requestPayload": {"id": request_id},
        "responsePayload": {"ok": True},
    }
    return json.dumps(outcome).encode()


class Flows:
    """A flow starter that records starts and refuses the request ids in ``refuse``."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Any, str]] = []
        self.refuse: set[str] = set()

    async def __call__(self, flow: str, payload: Any, name: str) -> None:
        if payload["requestContext"]["requestId"] in self.refuse:
            raise RuntimeError("flows are not running")
        self.started.append((flow, payload, name))


def reader(
    backend: Backend, clock: FakeClock, flows: Flows, lease: float = 60.0
) -> DestinationReader:
    return DestinationReader(
        backend,
        [BUS, FLOW, Destination("function", "other")],
        bus=EventBus(backend, clock=clock),
        start_flow=flows,
        clock=clock,
        lease=lease,
        keep_acked=KEEP,
        trim_every=EVERY,
    )


async def settled(backend: Backend, r: DestinationReader, delivered: int) -> None:
    """Wait (real time) until ``delivered`` records were delivered and acknowledged."""
    for _ in range(3000):
        if r.delivered >= delivered:
            waiting = [
                await backend.log.pending(d.stream, DESTINATIONS_GROUP) for d in r.destinations
            ]
            if not any(waiting):
                return
        await asyncio.sleep(0.002)
    raise AssertionError(f"delivered {r.delivered} of {delivered}")


def test_the_bus_event_is_lambdas() -> None:
    event = destination_event(json.loads(record("req-1", "RetriesExhausted")))
    assert event["source"] == "lambda"
    assert event["detail-type"] == "Lambda Function Invocation Result - Failure"
    assert event["id"] == "req-1"
    assert event["resources"] == [ARN]
    success = destination_event(json.loads(record("req-2")))
    assert success["detail-type"] == "Lambda Function Invocation Result - Success"


async def test_records_are_delivered_and_the_streams_stay_bounded(
    shared: Backend, clock: FakeClock
) -> None:
    flows = Flows()
    r = reader(shared, clock, flows)
    assert [d.stream for d in r.destinations] == [BUS.stream, FLOW.stream]  # no function stream
    await r.start()
    longest, seconds = 0, 100
    try:
        for second in range(seconds):
            for index in range(RATE):
                await shared.log.append(BUS.stream, record(f"b{second}-{index}"))
                await shared.log.append(FLOW.stream, record(f"f{second}-{index}"))
            await settled(shared, r, 2 * RATE * (second + 1))
            await r.trim()
            longest = max(longest, await shared.log.length(BUS.stream))
            longest = max(longest, await shared.log.length(FLOW.stream))
            clock.advance(1.0)
    finally:
        await r.stop()
    assert longest <= RATE * (KEEP + 2)
    assert r.trimmer.trimmed >= 2 * (seconds * RATE - RATE * (KEEP + 2))
    events = [json.loads(e.data)["event"] for e in await shared.log.range(bus_stream("done"))]
    assert [e["id"] for e in events] == [f"b{s}-{i}" for s in range(seconds) for i in range(RATE)]
    assert events[0]["type"] == "Lambda Function Invocation Result - Success"
    assert events[0]["source"] == "lambda"
    assert events[0]["data"]["requestPayload"] == {"id": "b0-0"}
    assert [(flow, name) for flow, _, name in flows.started] == [
        ("after", f"f{s}-{i}") for s in range(seconds) for i in range(RATE)
    ]


async def test_pending_and_unread_records_are_kept(shared: Backend, clock: FakeClock) -> None:
    flows = Flows()
    flows.refuse.add("poison")
    r = reader(shared, clock, flows, lease=200.0)
    await r.start()
    try:
        await shared.log.append(FLOW.stream, record("poison"))
        for index in range(50):
            await shared.log.append(FLOW.stream, record(f"ok{index}"))
            await settled_count(flows, index + 1)
            clock.advance(1.0)
        held = await shared.log.pending(FLOW.stream, DESTINATIONS_GROUP)
        assert len(held) == 1  # the refused record, waiting for its lease
        clock.advance(KEEP * 1.5)  # past keep, not past the lease (95 s of 200)
        assert await r.trim() == 0
        assert await shared.log.length(FLOW.stream) == 51  # it and everything after it stay
        # The flows service comes up; the lease runs out and the record is delivered.
        flows.refuse.clear()
        clock.advance(110.0)
        await settled(shared, r, 51)
        assert flows.started[-1][2] == "poison"
    finally:
        await r.stop()
    # Unread: appended while nobody reads, long after. What goes is what was
    # acknowledged KEEP s before the newest acknowledged record (ok49, at 49 s).
    await shared.log.append(FLOW.stream, record("late"))
    clock.advance(KEEP * 10)
    await r.trim()
    left = [
        json.loads(entry.data)["requestContext"]["requestId"]
        for entry in await shared.log.range(FLOW.stream)
    ]
    assert left == [f"ok{index}" for index in range(19, 50)] + ["late"]


async def settled_count(flows: Flows, count: int) -> None:
    """Wait (real time) until ``count`` flow executions were started."""
    for _ in range(3000):
        if len(flows.started) >= count:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"started {len(flows.started)} of {count}")


async def test_a_record_that_can_never_be_delivered_is_dropped_not_held(
    shared: Backend, clock: FakeClock
) -> None:
    r = reader(shared, clock, Flows())
    await r.start()
    try:
        huge = json.loads(record("huge"))
        huge["responsePayload"] = {"blob": "x" * 300_000}  # over the bus's 256 KB
        await shared.log.append(BUS.stream, json.dumps(huge).encode())
        await shared.log.append(BUS.stream, b"not json")
        await shared.log.append(BUS.stream, record("fine"))
        await settled(shared, r, 1)
    finally:
        await r.stop()
    assert (r.refused, r.delivered) == (2, 1)
    assert await shared.log.pending(BUS.stream, DESTINATIONS_GROUP) == []
    events = [json.loads(e.data)["event"] for e in await shared.log.range(bus_stream("done"))]
    assert [e["id"] for e in events] == ["fine"]
